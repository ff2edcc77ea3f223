"""`ragtune label` whose file replacements wait while a marker file exists, so that a test can kill it in the
middle of a write: usage `python label_slow_server.py MARKER label ARGS...`.

While MARKER exists, each `os.replace` (the rename that ends every atomic write, `ragtune.io.atomic_path`)
first touches MARKER.waiting, with the temporary file fully written beside its target, then sleeps."""

import os
import sys
import time
from pathlib import Path

marker = Path(sys.argv[1])
real_replace = os.replace


def replace_slowly(src, dst, **kwargs):
    if marker.exists():
        Path(f"{marker}.waiting").touch()
        time.sleep(120)
    real_replace(src, dst, **kwargs)


os.replace = replace_slowly

from ragtune.cli import main  # noqa: E402 (after the patch, as a user's process would import it)

sys.exit(main(sys.argv[2:]))
