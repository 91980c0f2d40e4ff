"""`python -m torchcaffe <command> ...`: the `torchcaffe` tool (torchcaffe.cli)."""
import sys

from .cli import main

sys.exit(main())
