"""Staged FCN training: `python solve.py voc-fcn8s [--stages 32s,16s,8s] ...`

A thin wrapper around `solvers.solve` (see `python solve.py --help`).
"""
import sys

from solvers.solve import main

if __name__ == "__main__":
    sys.exit(main())
