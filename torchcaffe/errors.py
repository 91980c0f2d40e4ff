"""Errors the runtime raises: each names the file, layer or field at fault.

Messages quote what the user wrote (a layer's name or type, a file name), so
they are clipped: a 10 MB `type:` string must not make a 10 MB message.
"""

#: Caffe's int32 limit: the most elements a blob may hold (Blob::Reshape), the
#: largest value of its int32 fields
INT_MAX = 2**31 - 1

#: Longest message kept whole; longer ones keep their start and end
MAX_MESSAGE = 4096
#: Longest user string (name, type) quoted whole in a message
MAX_QUOTE = 200


def clip(text: str, limit: int = MAX_QUOTE) -> str:
    """`text`, or its start and end with the number of characters left out."""
    if len(text) <= limit:
        return text
    keep = limit // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} characters]...{text[-keep:]}"


class CaffeError(ValueError):
    """A net, layer, file or parameter that Caffe would also refuse."""

    def __init__(self, message: str = "", *args):
        super().__init__(clip(str(message), MAX_MESSAGE), *args)


class LayerError(CaffeError):
    """An error attributed to one layer; the message starts with its name and
    type, after the net's source file when that is known."""

    def __init__(self, layer_name: str, layer_type: str, message: str,
                 source: str | None = None):
        self.layer_name = layer_name
        self.layer_type = layer_type
        self.message = message
        self.source = source
        where = f"{clip(source)}: " if source else ""
        super().__init__(f"{where}layer '{clip(layer_name)}' (type {clip(layer_type)}): {message}")


_LAYER_ERROR_TYPES: dict[type, type] = {}


def layer_error_from(exc: Exception, layer_name: str, layer_type: str,
                     message: str) -> LayerError:
    """A LayerError that is also an instance of `exc`'s type, so code that
    catches what a Python layer raised (pycaffe passes it through, e.g. a
    RuntimeError) still catches it; a plain LayerError when the types cannot
    be combined."""
    kind = type(exc)
    if kind not in _LAYER_ERROR_TYPES:
        try:
            _LAYER_ERROR_TYPES[kind] = type(f"LayerError_{kind.__name__}", (LayerError, kind), {})
        except TypeError:  # incompatible layouts (OSError and kin)
            _LAYER_ERROR_TYPES[kind] = LayerError
    return _LAYER_ERROR_TYPES[kind](layer_name, layer_type, message)
