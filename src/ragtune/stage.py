"""What every stage entry point shares: logging set-up and turning RagtuneError into a clear exit."""

from __future__ import annotations

import logging
import os
import sys
from typing import Callable

from .errors import RagtuneError


def run_main(main: Callable[[], None]) -> None:
    """Run a stage's main(); a RagtuneError prints its message (no traceback) and exits 2."""
    logging.basicConfig(level=os.environ.get("RAGTUNE_LOG", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Keep third-party chatter (HTTP clients, alembic migrations) out of stage logs.
    for noisy in ("httpx", "httpx2", "httpcore", "anthropic", "alembic", "urllib3", "huggingface_hub", "filelock"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        main()
    except RagtuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
