"""pytest plugin (`-p bench.gpu_golden`): run the golden cases on CUDA.

The golden tests select the CPU with `torchcaffe.set_mode_cpu()`; under
this plugin that call selects the GPU instead, so every case computes on
CUDA device 0 and is compared with BVLC Caffe's outputs at the tests' own
tolerances. Multi-process tests see FCN_TEST_DEVICE=cuda and put each rank
on its own GPU.
"""
import os


def pytest_configure(config):
    import torchcaffe
    from torchcaffe import mode

    os.environ["FCN_TEST_DEVICE"] = "cuda"
    mode.set_device(0)
    mode.set_mode_gpu()
    torchcaffe.set_mode_cpu = mode.set_mode_cpu = mode.set_mode_gpu
