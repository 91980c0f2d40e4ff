"""BVLC Caffe's own pycaffe test suite (python/caffe/test), unchanged, run
against torchcaffe through the `import caffe` alias.

    BVLC_CAFFE=/path/to/caffe pytest tests/test_bvlc_pycaffe_suite.py

(a clone of github.com/BVLC/caffe; test_draw also reads its models/ and
examples/ prototxts and needs pydot and Graphviz's dot). Without
BVLC_CAFFE the test is skipped.
"""
import re

from external_checkouts import checkout, run_with_alias


def test_bvlc_pycaffe_suite_passes_through_the_alias(tmp_path):
    caffe_root = checkout("BVLC_CAFFE", "BVLC/caffe", "python/caffe/test/test_net.py")
    suite = caffe_root / "python" / "caffe" / "test"
    work = tmp_path / "cwd"  # test_solver snapshots into the current folder
    work.mkdir()
    result = run_with_alias(["-m", "unittest", "discover", "-s", str(suite), "-v"],
                            cwd=work, site=tmp_path / "site")
    report = result.stderr
    ran = re.search(r"^Ran (\d+) tests?", report, re.M)
    problems = [line for line in report.splitlines()
                if line.startswith(("FAIL:", "ERROR:")) or line.endswith(("... FAIL", "... ERROR"))]
    print(f"BVLC pycaffe suite: {ran.group(1) if ran else '?'} tests ran; problems: {problems}")
    assert ran and int(ran.group(1)) >= 46, report[-3000:]
    assert result.returncode == 0 and re.search(r"^OK\b", report, re.M), report[-6000:]
    assert "skipped" not in report.split("\nOK", 1)[-1], report[-2000:]
