"""``make editor``: Mage's editor for this project on http://127.0.0.1:6789.

On the embedded defaults: the embedded PostgreSQL (its settings exported for io_config.yaml's
profile and dbt's), and the activity API simulator when ACTIVITY_API_URL is unset. Login is on; the
first owner comes from DEFAULT_OWNER_EMAIL / DEFAULT_OWNER_USERNAME / DEFAULT_OWNER_PASSWORD
(documented local defaults, for a laptop only). When Mage stops, git's index is refreshed for the
pipelines' metadata.yaml files it rewrote without a change git keeps (see pipeline_metadata).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from mage_project import config, transform
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
        # Mage's command line with the project's fix to its queue (mage_project/mage_queue.py).
        # Same process group: Ctrl-C (or a signal to the group) stops Mage's workers too.
        proc = subprocess.Popen(
            [sys.executable, "-m", "mage_project.mage_cli", "start", str(config.PROJECT_ROOT),
             "--host", host, "--port", port],
            env=env,
        )
        signal.signal(signal.SIGTERM, lambda *_: proc.terminate())
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.terminate()
            return proc.wait()
        finally:
            refresh_git_index(config.PROJECT_ROOT)
