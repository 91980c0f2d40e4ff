"""`nyud_layers`: the module name the reference nets give their NYUDv2 data layers.

Caffe imports a Python layer's `module` by plain name, so this name must be
importable as it is; the layers live in `data_layers.nyud_layers`.
"""
from data_layers.nyud_layers import NYUDSegDataLayer

__all__ = ["NYUDSegDataLayer"]
