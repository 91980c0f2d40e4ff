"""Net surgery for FCN: fc -> conv weight transplant, bilinear upsampling kernels,
score-layer expansion.  Pure functions over pycaffe-style nets, so they run on
torchcaffe and on BVLC's pycaffe alike."""
from surgery.bilinear import interp, upsample_filt
from surgery.transplant import BlobMove, TransplantReport, expand_score, transplant

__all__ = ["transplant", "TransplantReport", "BlobMove", "upsample_filt", "interp",
           "expand_score"]
