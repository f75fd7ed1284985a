"""``make editor``: Mage's editor for this project on http://127.0.0.1:6789.

On the embedded defaults: the embedded PostgreSQL (its settings exported for io_config.yaml's
profile and dbt's), and the activity API simulator when ACTIVITY_API_URL is unset. Login is on; the
first owner comes from DEFAULT_OWNER_EMAIL / DEFAULT_OWNER_USERNAME / DEFAULT_OWNER_PASSWORD
(documented local defaults, for a laptop only). SIGINT or SIGTERM stops Mage's whole process
tree within ``processes.GRACE_SECONDS`` (no process, no port left behind). When Mage stops,
git's index is refreshed for the pipelines' metadata.yaml files it rewrote without a change git
keeps (see pipeline_metadata).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mage_project import config, processes, transform
from mage_project.pipeline_metadata import refresh_git_index
from mage_project.runner import activity_api, prepare_mage_environment

LOCAL_OWNER = {
    "DEFAULT_OWNER_EMAIL": "admin@localhost",
    "DEFAULT_OWNER_USERNAME": "admin",
    "DEFAULT_OWNER_PASSWORD": "change-me-locally",
}


def editor_environment() -> dict:
    """Mage's environment: the warehouse's settings resolved (Mage's dbt block and io_config.yaml
    read them from it) and the local owner unless one is set."""
    env = {**os.environ, **transform.warehouse_environment()}
    for name, value in LOCAL_OWNER.items():
        env.setdefault(name, value)
    return env


def main() -> int:
    prepare_mage_environment()
    host = os.environ.get("MAGE_EDITOR_HOST", "127.0.0.1")
    port = os.environ.get("MAGE_EDITOR_PORT", "6789")
    with activity_api() as url:
        env = editor_environment()
        print(f"activity API: {url}\nMage editor: http://{host}:{port} "
              f"(login {env['DEFAULT_OWNER_EMAIL']})", flush=True)
        # Mage's command line with the project's fix to its queue (mage_project/mage_queue.py),
        # in a process group of its own: SIGINT (Ctrl-C) or SIGTERM (a process manager, docker
        # stop, make) stops all of it, its web server, scheduler and kernels, and frees the port.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mage_project.mage_cli", "start", str(config.PROJECT_ROOT),
             "--host", host, "--port", port],
            env=env, start_new_session=True,
        )
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
        try:
            code = proc.wait()
        except _Stopped:
            code = 0  # stopped as asked
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, signal.SIG_IGN)  # stopping already: a second one waits too
            processes.stop_group(proc)  # also when Mage ended on its own: what it started
            refresh_git_index(config.PROJECT_ROOT)
        return code


class _Stopped(Exception):
    """SIGINT or SIGTERM: stop the editor (raised out of the wait for Mage, which holds the
    child's wait lock: stopping it inside the handler would wait on that lock forever)."""


def _stop(signum, _frame) -> None:
    raise _Stopped(signum)
