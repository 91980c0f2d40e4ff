"""Property: every mutated input to a reader ends in a CaffeError or is
accepted with the cross-checks holding (protobuf's values, all-or-nothing
restore), never in another exception. The generators are the fuzz
campaigns' (`tests/fuzz`); `python -m tests.fuzz` runs them by the ten
thousand with hang detection."""
from __future__ import annotations

import logging
import random

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fuzz.campaigns import CAMPAIGNS
from fuzz.outcome import memory_cap, run_one

EXAMPLES = {"caffemodel": 150, "solverstate": 80, "sidecar": 80, "prototxt": 120, "data": 60}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    campaigns = {}
    for name in EXAMPLES:
        campaign = CAMPAIGNS[name]()
        campaign.prepare(tmp_path_factory.mktemp(name))
        campaigns[name] = campaign
    return campaigns


def _property(name: str):
    @settings(max_examples=EXAMPLES[name], deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(seed=st.integers(0, 2**64 - 1))
    def check(prepared, seed):
        logging.disable(logging.CRITICAL)
        try:
            with memory_cap():
                outcome, detail = run_one(prepared[name], random.Random(seed))
        finally:
            logging.disable(logging.NOTSET)
        assert outcome in ("clean", "accepted"), f"{name} case seed {seed}: {detail}"
    return check


test_caffemodel_reader_fuzz = _property("caffemodel")
test_solverstate_restore_fuzz = _property("solverstate")
test_sidecar_fuzz = _property("sidecar")
test_prototxt_fuzz = _property("prototxt")
test_data_layers_fuzz = _property("data")
