"""Small process helpers shared by the results store and the search studies."""

from __future__ import annotations

import os

__all__ = ["pid_alive"]


def pid_alive(pid: int) -> bool:
    """Whether a process with ``pid`` exists on this host (True when that cannot be told).

    On Windows ``os.kill(pid, 0)`` would send Ctrl-C, so there the caller's heartbeat decides.
    """
    if os.name == "nt":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True
