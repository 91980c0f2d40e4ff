"""Reference FCN weights: the Model Zoo registry, downloading, casting the
ILSVRC classifiers to fully convolutional base nets, export and inference.
Run `python -m weights --help`."""
