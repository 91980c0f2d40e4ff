"""Freed host memory is reused, not faulted in again: each case runs in a
fresh interpreter, since the allocator and malloc's settings are per
process."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from torchcaffe import host_memory

REPO = Path(__file__).resolve().parents[1]
BLOCK_MIB = 256
#: a block under glibc's own largest mmap threshold (32 MiB)
MID_BLOCK_MIB = 24
PAGE = os.sysconf("SC_PAGE_SIZE")
PAGES = BLOCK_MIB * 2**20 // PAGE
MID_PAGES = MID_BLOCK_MIB * 2**20 // PAGE


glibc_only = pytest.mark.skipif(host_memory._glibc() is None, reason="malloc tuning is glibc's")
#: the pool is built on first use with the system's C++ compiler, on Linux
HAVE_POOL = sys.platform.startswith("linux") and shutil.which(os.environ.get("CXX") or "c++")
needs_pool = pytest.mark.skipif(not HAVE_POOL, reason="the pool needs Linux and a C++ compiler")

# builds a one-layer net (which applies the policy), then makes, fills and
# frees three blocks of about argv[1] MiB in turn, counting each one's page
# faults. Each block is 64 KiB smaller than the last: a small object that
# lands at the start of a freed block would otherwise push a block of the
# same size past it onto fresh pages.
_SCRIPT = textwrap.dedent("""
    import json, resource, sys, tempfile
    import torch
    import torchcaffe as caffe
    from torchcaffe import host_memory
    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write('input: "data" input_shape { dim: 1 dim: 1 dim: 2 dim: 2 } '
                'layer { name: "r" type: "ReLU" bottom: "data" top: "r" }')
    caffe.Net(f.name, caffe.TEST)
    def faults_of_one_block(i):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = torch.empty(int(sys.argv[1]) * 2**20 - i * 2**16, dtype=torch.uint8).fill_(1)
        del block
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({"state": host_memory.apply_policy(),
                      "faults": [faults_of_one_block(i) for i in range(3)]}))
""")


def _run(env_extra: dict, block_mib: int = BLOCK_MIB) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "TORCHCAFFE_MALLOC"}
    env.update(env_extra, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", _SCRIPT, str(block_mib)], env=env,
                          capture_output=True, text=True, timeout=300)


def _result(env_extra: dict, block_mib: int = BLOCK_MIB) -> dict:
    done = _run(env_extra, block_mib)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@needs_pool
def test_a_net_makes_a_freed_block_reusable_without_page_faults():
    result = _result({})
    assert result["state"] == "pool"
    # later blocks land on the first one's pages: almost no faults
    assert max(result["faults"][1:]) < PAGES // 20


@glibc_only
def test_retain_policy_reuses_a_freed_block_from_the_heap():
    result = _result({"TORCHCAFFE_MALLOC": "retain"})
    assert result["state"] == "retain"
    assert max(result["faults"][1:]) < PAGES // 20


@glibc_only
def test_system_policy_leaves_glibc_faulting_every_page_again():
    result = _result({"TORCHCAFFE_MALLOC": "system"})
    assert result["state"] == "system"
    # glibc's default: a block this large is mmap'd and unmapped on free
    assert min(result["faults"]) > PAGES // 2


@glibc_only
def test_system_policy_lets_glibc_keep_a_mid_sized_block_once_one_was_freed():
    # the control for the lean case: glibc raises its mmap threshold to the
    # size of a freed mapped block, so from the second block on it is reused
    result = _result({"TORCHCAFFE_MALLOC": "system"}, MID_BLOCK_MIB)
    assert result["faults"][0] > MID_PAGES // 2
    assert result["faults"][2] < MID_PAGES // 20


@glibc_only
def test_lean_policy_gives_every_large_block_back_on_free():
    for block_mib, pages in ((BLOCK_MIB, PAGES), (MID_BLOCK_MIB, MID_PAGES)):
        result = _result({"TORCHCAFFE_MALLOC": "lean"}, block_mib)
        assert result["state"] == "lean"
        # a fresh mapping each time: every page faults again
        assert min(result["faults"]) > pages // 2, block_mib


@glibc_only
def test_users_own_malloc_settings_are_left_alone():
    result = _result({"MALLOC_MMAP_THRESHOLD_": str(2**20)})
    assert result["state"] == "environment"
    assert min(result["faults"]) > PAGES // 2


def test_a_bad_policy_names_the_variable():
    done = _run({"TORCHCAFFE_MALLOC": "sometimes"})
    assert done.returncode != 0
    assert "TORCHCAFFE_MALLOC='sometimes'" in done.stderr
    assert "'pool', 'retain', 'lean', 'system'" in done.stderr
    assert "Traceback" not in done.stderr.splitlines()[-1]


def test_the_bench_refuses_a_bad_policy_before_any_section_runs(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TORCHCAFFE_MALLOC"}
    env.update(TORCHCAFFE_MALLOC="leen", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "bench", "--only", "load_speed", "--json",
                           str(tmp_path / "rows.json")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines()[-1] == (
        "python -m bench: error: TORCHCAFFE_MALLOC='leen': expected one of "
        "'pool', 'retain', 'lean', 'system'")
    assert "bench: load_speed" not in done.stderr  # refused before the section
    assert not (tmp_path / "rows.json").exists()


# ---------------------------------------------------------------- the pool
# the pool's cases, in one fresh interpreter: page faults and contents of
# blocks made from kept ones, against what mmap/mremap guarantee
_POOL_SCRIPT = textwrap.dedent("""
    import json, resource
    import torch
    from torchcaffe import host_memory, host_pool
    MiB = 2**20
    def minflt():
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    def block(mib):
        return torch.empty(mib * MiB, dtype=torch.uint8)
    out = {"state": host_memory.apply_policy()}
    sentinel = block(8).fill_(7)  # live throughout: never moved or reused
    a = block(64).fill_(1)
    del a
    before = minflt(); b = block(64).fill_(2); out["same size"] = minflt() - before
    del b
    before = minflt(); c = block(16).fill_(3); out["smaller"] = minflt() - before
    del c  # kept now: c's 16 MiB and the 48 MiB behind it
    # 80 MiB: more than any kept block, so both kept ones (64 MiB) are moved
    # together in front of 16 MiB of fresh pages
    before = minflt(); d = block(80).fill_(4); out["gathered"] = minflt() - before
    del d
    stats = host_pool.stats()
    out["high water"], out["resident"] = stats["high_water"], stats["in_use"] + stats["kept"]
    out["sentinel"] = bool((sentinel == 7).all())
    host_memory.trim()
    out["kept after trim"] = host_pool.stats()["kept"]
    before = minflt(); e = block(16).fill_(0); out["after trim"] = minflt() - before
    # a kept block's values move with its pages: the only kept block, then
    # the front of a larger one gathered from it
    pattern = torch.arange(16 * MiB // 4, dtype=torch.int32)
    e.view(torch.int32).copy_(pattern)
    del e
    f = block(24)
    out["moved values"] = bool(torch.equal(f[:16 * MiB].view(torch.int32), pattern))
    print(json.dumps(out))
""")
MIB_PAGES = 2**20 // PAGE


def _pool_result(env_extra: dict | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MALLOC_") and k != "TORCHCAFFE_MALLOC"}
    env.update(env_extra or {}, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", _POOL_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def pool_result():
    return _pool_result()


@needs_pool
def test_the_pool_is_the_default_policy(pool_result):
    assert pool_result["state"] == "pool"


@needs_pool
def test_the_pool_serves_the_same_size_and_a_smaller_one_without_faults(pool_result):
    assert pool_result["same size"] < MIB_PAGES
    assert pool_result["smaller"] < MIB_PAGES


@needs_pool
def test_the_pool_moves_kept_blocks_together_for_a_larger_one(pool_result):
    # only the 16 MiB no kept block covered are fresh pages
    assert 15 * MIB_PAGES < pool_result["gathered"] < 17 * MIB_PAGES


@needs_pool
def test_the_pools_resident_memory_never_passes_the_most_in_use(pool_result):
    # most in use at once: the 8 MiB sentinel and the 80 MiB block
    assert pool_result["high water"] == 88 * 2**20
    assert pool_result["resident"] <= pool_result["high water"]


@needs_pool
def test_the_pool_never_touches_a_live_block(pool_result):
    assert pool_result["sentinel"]


@needs_pool
def test_the_pool_gives_kept_blocks_back_on_trim(pool_result):
    assert pool_result["kept after trim"] == 0
    assert pool_result["after trim"] > 15 * MIB_PAGES


@needs_pool
def test_the_pool_moves_pages_with_their_values(pool_result):
    assert pool_result["moved values"]


@glibc_only
def test_without_a_compiler_the_pool_falls_back_to_retain_and_says_why(tmp_path):
    done = _run({"CXX": str(tmp_path / "no-such-c++"), "XDG_CACHE_HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["state"] == "retain"
    assert max(result["faults"][1:]) < PAGES // 20
    assert "pool allocator is unavailable (no C++ compiler" in done.stderr
    assert "no-such-c++" in done.stderr


@needs_pool
def test_the_pool_is_built_once_per_machine(tmp_path):
    first = _pool_result({"XDG_CACHE_HOME": str(tmp_path)})
    [built] = (tmp_path / "torchcaffe").glob("host_pool-*.so")
    stamp = built.stat().st_mtime_ns
    # a second process loads the build; it would fail to build again
    second = _pool_result({"XDG_CACHE_HOME": str(tmp_path), "CXX": str(tmp_path / "gone")})
    assert first["state"] == second["state"] == "pool"
    assert built.stat().st_mtime_ns == stamp
    assert list((tmp_path / "torchcaffe").iterdir()) == [built]  # no scratch files left
