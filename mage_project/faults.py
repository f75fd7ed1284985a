"""Failpoints: named places where a test can have the process killed with SIGKILL.

``MAGE_PROJECT_FAILPOINT=<name>`` makes the process kill itself at that point, as a crash or
an OOM kill would, so the tests can show that a re-run after any crash loads exactly once.
Unset (always, outside those tests), a failpoint costs one dictionary lookup.

The failpoints, in the order a run passes them (tests/reliability/test_crashes.py and
tests/e2e/test_user_activity_mage.py kill at each; a test kills elsewhere from outside, through
a proxy that holds the run's connection):

- user_activity_ingest: ``after_landing_part``, ``after_validate``, ``after_staging_copy``,
  ``before_commit``, ``after_commit`` (pipelines/user_activity.py)
- warehouse_elt: ``drops_before_commit``, ``drops_after_file`` (each file version,
  pipelines/file_drops.py); ``gate_before_verdict``, ``gate_after_verdict``,
  ``plan_after_lease``, ``publish_start``, ``publish_before_swap``, ``publish_after_swap``,
  ``publish_after_record`` (pipelines/quality_gates.py)
"""

from __future__ import annotations

import os
import signal


def failpoint(name: str) -> None:
    if os.environ.get("MAGE_PROJECT_FAILPOINT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
