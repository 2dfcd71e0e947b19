"""``python -m bastion.network listener NAME``: what ``bastion serve`` runs per listener."""

from __future__ import annotations

import sys

from bastion.network.serve import run_listener

if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "listener":
        sys.exit("usage: python -m bastion.network listener NAME [SUPERVISOR_PID]")
    run_listener(sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else None)
