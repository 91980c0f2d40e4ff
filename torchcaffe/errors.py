"""Errors the runtime raises: each names the file, layer or field at fault."""


class CaffeError(ValueError):
    """A net, layer, file or parameter that Caffe would also refuse."""


class LayerError(CaffeError):
    """An error attributed to one layer; the message starts with its name and type."""

    def __init__(self, layer_name: str, layer_type: str, message: str):
        self.layer_name = layer_name
        self.layer_type = layer_type
        super().__init__(f"layer '{layer_name}' (type {layer_type}): {message}")


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
