"""Shared test configuration: the closing lines say which golden sets ran."""
from golden_sets import SETS


def pytest_terminal_summary(terminalreporter):
    for label, root in SETS:
        if root.is_dir():
            terminalreporter.write_line(f"golden cases computed by BVLC Caffe: {label} set checked ({root})")
        else:
            terminalreporter.write_line(
                f"golden cases computed by BVLC Caffe: {label} set ABSENT at {root}: its cases were "
                "skipped (set FCN_GOLDEN to its folder to run them)", yellow=True, bold=True)
