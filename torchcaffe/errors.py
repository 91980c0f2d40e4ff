"""Errors the runtime raises: each names the file, layer or field at fault."""


class CaffeError(ValueError):
    """A net, layer, file or parameter that Caffe would also refuse."""


class LayerError(CaffeError):
    """An error attributed to one layer; the message starts with its name and type."""

    def __init__(self, layer_name: str, layer_type: str, message: str):
        self.layer_name = layer_name
        self.layer_type = layer_type
        super().__init__(f"layer '{layer_name}' (type {layer_type}): {message}")
