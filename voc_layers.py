"""`voc_layers`: the module name the reference nets give their PASCAL VOC and SBD data layers.

Caffe imports a Python layer's `module` by plain name, so this name must be
importable as it is; the layers live in `data_layers.voc_layers`.
"""
from data_layers.voc_layers import SBDDSegDataLayer, VOCSegDataLayer

__all__ = ["SBDDSegDataLayer", "VOCSegDataLayer"]
