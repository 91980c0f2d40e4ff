"""Freed host memory is reused, not faulted in again (glibc only): each case
runs in a fresh interpreter, since malloc's settings are per process."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchcaffe import host_memory

REPO = Path(__file__).resolve().parents[1]
BLOCK_MIB = 256
PAGES = BLOCK_MIB * 2**20 // os.sysconf("SC_PAGE_SIZE")


glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason="malloc tuning is glibc's")

# builds a one-layer net (which applies the policy), then counts the page
# faults of a second 256 MiB block after the first was freed
_SCRIPT = textwrap.dedent(f"""
    import json, resource, sys, tempfile
    import torch
    import torchcaffe as caffe
    from torchcaffe import host_memory
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write('input: "data" input_shape {{ dim: 1 dim: 1 dim: 2 dim: 2 }} '
                'layer {{ name: "r" type: "ReLU" bottom: "data" top: "r" }}')
    caffe.Net(f.name, caffe.TEST)
    def faults_of_one_block():
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty({BLOCK_MIB} * 2**20, dtype=torch.uint8).fill_(1)
        del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    faults_of_one_block()
    print(json.dumps({{"state": host_memory.retain_freed_memory(),
                      "faults": faults_of_one_block()}}))
""")


def _run(env_extra: dict) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "TORCHCAFFE_MALLOC"}
    env.update(env_extra, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _SCRIPT], env=env, capture_output=True,
                          text=True, timeout=300)


def _result(env_extra: dict) -> dict:
    done = _run(env_extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@glibc_only
def test_a_net_makes_a_freed_block_reusable_without_page_faults():
    result = _result({})
    assert result["state"] == "retain"
    # the second block lands on the first one's pages: almost no faults
    assert result["faults"] < PAGES // 20


@glibc_only
def test_system_policy_leaves_glibc_faulting_every_page_again():
    result = _result({"TORCHCAFFE_MALLOC": "system"})
    assert result["state"] == "system"
    # glibc's default: a block this large is mmap'd and unmapped on free
    assert result["faults"] > PAGES // 2


@glibc_only
def test_users_own_malloc_settings_are_left_alone():
    result = _result({"MALLOC_MMAP_THRESHOLD_": str(2**20)})
    assert result["state"] == "environment"
    assert result["faults"] > PAGES // 2


def test_a_bad_policy_names_the_variable():
    done = _run({"TORCHCAFFE_MALLOC": "sometimes"})
    assert done.returncode != 0
    assert "TORCHCAFFE_MALLOC='sometimes'" in done.stderr
    assert "'retain' or 'system'" in done.stderr
    assert "Traceback" not in done.stderr.splitlines()[-1]
