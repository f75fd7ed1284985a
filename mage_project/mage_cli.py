"""Mage's own command line with the project's fixes to mage-ai 0.9.80 installed first.

``python -m mage_project.mage_cli start PROJECT --host ... --port ...`` is ``mage start`` with
two fixes, installed by ``install()``:

- the scheduler queues block runs through ``mage_queue.ProcessQueue`` (Mage's process queue
  loses or doubles block runs under load, see that module);
- sign-in (``POST /api/sessions``) refuses a token of a provider Mage has no sign-in for. Mage
  0.9.80 then skips the provider's check and hands out a session for the payload's ``email``,
  creating that user if absent: anyone could sign in as the owner without a password
  (CVE-2026-111823, fixed upstream after 0.9.80 with no release).

docker-compose, ``make editor`` and the tests start Mage this way; a plain ``mage start`` still
works, without the fixes.
"""

from __future__ import annotations

import functools
import sys


def install() -> None:
    """Install the project's fixes to Mage; calling it again changes nothing.

    Mage's settings must not be read before ``mage start`` has set the project's path: the queue
    module is imported on first use of the factory, and the sign-in fix goes in when ``mage start``
    sets up its server.
    """
    _install_process_queue()
    _guard_sign_in_once_the_project_is_set()


def _install_process_queue() -> None:
    """Make Mage's queue factory build the project's process queue."""
    from mage_ai.data_preparation.repo_manager import get_repo_config
    from mage_ai.orchestration.queue.config import QueueConfig, QueueType
    from mage_ai.orchestration.queue.queue_factory import QueueFactory

    mage_get_queue = QueueFactory.get_queue.__func__
    if getattr(mage_get_queue, "installed_by", None) == __name__:
        return

    def get_queue(cls):
        if cls.queue is None:
            queue_config = QueueConfig.load(config=get_repo_config().queue_config or {})
            if queue_config.queue_type == QueueType.PROCESS:
                from mage_project.mage_queue import ProcessQueue

                cls.queue = ProcessQueue(queue_config)
        return mage_get_queue(cls)

    get_queue.installed_by = __name__
    QueueFactory.get_queue = classmethod(get_queue)


def _guard_sign_in_once_the_project_is_set() -> None:
    """Install ``guard_sign_in`` when ``mage start`` sets up its server.

    Mage's session resource imports Mage's database module, which picks Mage's database from the
    project's path on import: imported before ``mage start`` has set the path, Mage would keep its
    users and runs in the wrong database. ``mage start`` sets the path, imports its server, then
    calls ``mage_ai.server.setup.initialize_globals`` (looked up when called) and serves: the
    guard goes in at that call, before the first request.
    """
    from mage_ai.server import setup

    mage_initialize_globals = setup.initialize_globals
    if getattr(mage_initialize_globals, "installed_by", None) == __name__:
        return

    @functools.wraps(mage_initialize_globals)
    def initialize_globals():
        guard_sign_in()
        return mage_initialize_globals()

    initialize_globals.installed_by = __name__
    setup.initialize_globals = initialize_globals


def guard_sign_in() -> None:
    """Make Mage's sign-in refuse a token whose provider is not one Mage can check it with.

    Such a payload gets Mage's own error for a failed sign-in (``ApiError.RESOURCE_NOT_FOUND``),
    with the message ``Unknown sign-in provider: ...``. Every other payload goes to Mage's
    ``SessionResource.create``. The providers Mage can check a token with are those of
    ``NAME_TO_PROVIDER`` that fetch the user from the provider (``SsoProvider``s); GitHub
    Enterprise, GitLab and Bitbucket there are for git only and have no such call.
    """
    from mage_ai.api.errors import ApiError
    from mage_ai.api.resources.SessionResource import SessionResource
    from mage_ai.authentication.providers.constants import NAME_TO_PROVIDER
    from mage_ai.authentication.providers.sso import SsoProvider

    mage_create = SessionResource.create.__func__
    if getattr(mage_create, "installed_by", None) == __name__:
        return
    providers = {name for name, provider in NAME_TO_PROVIDER.items() if issubclass(provider, SsoProvider)}

    @functools.wraps(mage_create)
    async def create(cls, payload, user, **kwargs):
        provider = payload.get("provider")
        if payload.get("token") and provider and not (isinstance(provider, str) and provider in providers):
            # A copy: Mage's own code updates the class's error dict in place.
            error = {**ApiError.RESOURCE_NOT_FOUND, "message": f"Unknown sign-in provider: {provider!r}."}
            raise ApiError(error)
        return await mage_create(cls, payload, user, **kwargs)

    create.installed_by = __name__
    SessionResource.create = classmethod(create)


def main() -> int:
    from mage_ai.cli.main import app

    install()
    return app()


if __name__ == "__mp_main__":  # a child started by "spawn" re-imports this module as its main
    install()
if __name__ == "__main__":
    sys.exit(main())
