"""Caffe's dataset tools: `python -m torchcaffe.tools.convert_imageset` and
`python -m torchcaffe.tools.compute_image_mean`."""
