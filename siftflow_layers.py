"""`siftflow_layers`: the module name the reference nets give their SIFT Flow data layers.

Caffe imports a Python layer's `module` by plain name, so this name must be
importable as it is; the layers live in `data_layers.siftflow_layers`.
"""
from data_layers.siftflow_layers import SIFTFlowSegDataLayer

__all__ = ["SIFTFlowSegDataLayer"]
