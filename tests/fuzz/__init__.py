"""Mutation fuzzing of every file format torchcaffe reads.

Each campaign (see `campaigns`) prepares valid seed files once, then turns
a case number into a mutated input (deterministically: the same seed and
number give the same input) and feeds it to the real entry point. A case
ends in one of:

- clean: a `CaffeError` (the named refusal the runtime promises);
- accepted: no error, and every cross-check held (values as protobuf
  decodes them, restore all-or-nothing, ...);
- crash: any other exception, a broken cross-check, or a dead worker;
- hang: no answer within the per-case timeout (`python -m tests.fuzz`).

`python -m tests.fuzz` runs the campaigns in a worker process and prints
the table; the property tests in `tests/test_fuzz.py` run a few hundred
cases of the same generators through hypothesis.
"""
