"""``make editor``: Mage's editor for this project on http://127.0.0.1:6789.

On the embedded defaults: the embedded PostgreSQL (its settings exported for io_config.yaml's
profile and dbt's), and the activity API simulator when ACTIVITY_API_URL is unset. Login is on; the
first owner comes from DEFAULT_OWNER_EMAIL / DEFAULT_OWNER_USERNAME / DEFAULT_OWNER_PASSWORD
(documented local defaults, for a laptop only: an editor on a host other than loopback is refused
with them), and Mage signs its sessions with a secret of the data directory's own unless
JWT_SECRET is set. SIGINT or SIGTERM stops Mage's whole process tree within
``processes.GRACE_SECONDS`` (no process, no port left behind). When Mage stops, git's index is
refreshed for the pipelines' metadata.yaml files it rewrote without a change git keeps (see
pipeline_metadata).
"""

from __future__ import annotations

import os
import secrets
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


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def editor_environment() -> dict:
    """Mage's environment: the warehouse's settings resolved (Mage's dbt block and io_config.yaml
    read them from it), the local owner unless one is set, and a JWT_SECRET of the data
    directory's own unless one is set (Mage's default is a public constant: anyone could sign a
    session for its server)."""
    env = {**os.environ, **transform.warehouse_environment()}
    for name, value in LOCAL_OWNER.items():
        env.setdefault(name, value)
    if not env.get("JWT_SECRET"):
        env["JWT_SECRET"] = jwt_secret()
    return env


def jwt_secret() -> str:
    """The data directory's own secret for Mage's sessions: random, made once, kept readable by
    its owner only (``<data dir>/mage/jwt_secret``)."""
    path = config.data_dir() / "mage" / "jwt_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip()


def check_exposure(host: str, environ: dict) -> None:
    """An editor reachable from other machines needs an owner password of its own: refuses a
    host other than loopback while the owner's password is the documented local default."""
    password = environ.get("DEFAULT_OWNER_PASSWORD") or LOCAL_OWNER["DEFAULT_OWNER_PASSWORD"]
    if host not in LOOPBACK and password == LOCAL_OWNER["DEFAULT_OWNER_PASSWORD"]:
        raise config.ConfigError(
            f"bad setting: MAGE_EDITOR_HOST={host!r} makes the editor reachable from other machines"
            " while DEFAULT_OWNER_PASSWORD is the local default: set DEFAULT_OWNER_PASSWORD (and"
            " DEFAULT_OWNER_EMAIL) first, or keep MAGE_EDITOR_HOST=127.0.0.1")


def main() -> int:
    prepare_mage_environment()
    host = os.environ.get("MAGE_EDITOR_HOST", "127.0.0.1")
    port = os.environ.get("MAGE_EDITOR_PORT", "6789")
    try:
        check_exposure(host, os.environ)
    except config.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
