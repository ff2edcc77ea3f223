"""`python -m ragtune ...`: the `ragtune` command, for an interpreter whose scripts are not on PATH."""

import sys

from .cli import main

sys.exit(main())
