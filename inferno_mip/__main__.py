"""``python -m inferno_mip``: the same command line as ``inferno-mip``."""

import sys

from .cli import main

sys.exit(main())
