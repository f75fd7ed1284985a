"""Failpoints: named places where a test can have the process killed with SIGKILL.

``MAGE_PROJECT_FAILPOINT=<name>`` makes the process kill itself at that point, as a crash or
an OOM kill would, so the tests can show that a re-run after any crash loads exactly once.
Unset (always, outside those tests), a failpoint costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("MAGE_PROJECT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
