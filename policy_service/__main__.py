"""``python -m policy_service``: the same as ``mango serve`` (what :mod:`policy_service.launch` runs)."""

from __future__ import annotations

import sys

from policy_service.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
