"""`pascalcontext_layers`: the module name the reference nets give their PASCAL-Context data layers.

Caffe imports a Python layer's `module` by plain name, so this name must be
importable as it is; the layers live in `data_layers.pascalcontext_layers`.
"""
from data_layers.pascalcontext_layers import PASCALContextSegDataLayer

__all__ = ["PASCALContextSegDataLayer"]
