"""Shared test configuration: the closing lines say which golden sets ran."""
import pytest

from golden_sets import SETS


def pytest_terminal_summary(terminalreporter):
    for label, root in SETS:
        if root.is_dir():
            terminalreporter.write_line(f"golden cases computed by BVLC Caffe: {label} set checked ({root})")
        else:
            terminalreporter.write_line(
                f"golden cases computed by BVLC Caffe: {label} set ABSENT at {root}: its cases were "
                "skipped (set FCN_GOLDEN to its folder to run them)", yellow=True, bold=True)


# ---------------------------------------------------------------- kernel choice
# The golden suites run once per kernel policy: the choice of implementation
# must not change any result beyond the suites' tolerances.
GOLDEN_MODULES = {"test_golden_layers", "test_golden_nets", "test_golden_solver", "test_golden_zoo"}
# (forward/backward pairs: one method's forward with another's backward)
FORCED_KERNELS = ["auto", "im2col,addmm", "channels_last", "winograd", "im2col_openblas,addmm_openblas",
                  "channels_last/im2col_openblas,linear/addmm_openblas", "direct/tap_gemm"]


@pytest.fixture(autouse=True, scope="session")
def _kernel_cache(tmp_path_factory):
    """Kernel measurements of the test run go to a file of its own, not the user's cache."""
    path = tmp_path_factory.mktemp("kernel-cache") / "kernels.json"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCHCAFFE_KERNEL_CACHE", str(path))
        yield path


@pytest.fixture(autouse=True)
def kernel_policy(request):
    from torchcaffe import kernel_choice

    with kernel_choice.policy(getattr(request, "param", "auto")):
        yield getattr(request, "param", "auto")


def pytest_generate_tests(metafunc):
    if metafunc.module.__name__ in GOLDEN_MODULES:
        metafunc.parametrize("kernel_policy", FORCED_KERNELS, indirect=True,
                             ids=[f"kernels={p}" for p in FORCED_KERNELS])
