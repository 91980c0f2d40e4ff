"""The built-in layer families; importing each registers its Caffe types in
`torchcaffe.layer_types.base.LAYER_TYPES`."""
from . import common
from . import loss
from . import neuron
from . import normalization
from . import vision
from . import python
from . import structure
from . import index
from . import recurrent
from . import data
from . import window_data
