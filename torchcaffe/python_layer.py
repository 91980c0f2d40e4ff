"""The base class of Python layers, with pycaffe's `caffe.Layer` interface.

A prototxt `type: "Python"` layer names a module and a class deriving from
`Layer`; the runtime instantiates it, sets `param_str` and `phase`, then calls
`setup(bottom, top)` once and `reshape(bottom, top)` / `forward(bottom, top)`
/ `backward(top, propagate_down, bottom)` as Caffe does. `bottom` and `top`
are lists of `Blob` whose `.data` / `.diff` are numpy arrays.

`self.blobs` holds the layer's own parameter blobs: `self.blobs.add_blob(*shape)`
in `setup` adds one (zero-filled). They are the net's learnable params of
this layer (`net.params[name]`, saved, loaded, shared and updated by solvers
as any layer's); `backward` writes their diffs.
"""
from .blob import Blob


class BlobVec(list):
    """pycaffe's BlobVec: a list of Blob with `add_blob(*shape)`."""

    def add_blob(self, *shape: int) -> None:
        self.append(Blob(tuple(int(d) for d in shape)))


class Layer:
    """Subclass this exactly as one subclasses pycaffe's `caffe.Layer`."""

    #: the text of `python_param.param_str` from the prototxt
    param_str: str = ""
    #: the phase of the net this layer lives in (`torchcaffe.TRAIN` or `TEST`)
    phase: int = 0
    #: pycaffe reports a Python layer's type as "Python"
    type: str = "Python"

    @property
    def blobs(self) -> BlobVec:
        """The layer's parameter blobs (see the module doc)."""
        blobs = self.__dict__.get("_blobs")
        if blobs is None:
            blobs = self.__dict__["_blobs"] = BlobVec()
        return blobs

    def setup(self, bottom, top):
        """Check parameters and bottoms; called once when the net is built."""

    def reshape(self, bottom, top):
        """Set every top's shape; called before each forward."""
        raise NotImplementedError(f"{type(self).__name__}.reshape is not implemented")

    def forward(self, bottom, top):
        """Write `top[i].data` from `bottom[j].data`."""
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def backward(self, top, propagate_down, bottom):
        """Write `bottom[i].diff` where `propagate_down[i]`, from `top[j].diff`."""
