"""Mage's own command line with the project's fixes to mage-ai 0.9.80 installed first.

``python -m mage_project.mage_cli start PROJECT --host ... --port ...`` is ``mage start`` with
three fixes, installed by ``install()``:

- the scheduler queues block runs through ``mage_queue.ProcessQueue`` (Mage's process queue
  loses or doubles block runs under load, see that module);
- sign-in (``POST /api/sessions``) refuses a token of a provider Mage has no sign-in for. Mage
  0.9.80 then skips the provider's check and hands out a session for the payload's ``email``,
  creating that user if absent: anyone could sign in as the owner without a password
  (CVE-2026-111823, fixed upstream after 0.9.80 with no release);
- with pipelines not edited in place (``DISABLE_NOTEBOOK_EDIT_ACCESS`` 1 or 2), the owner's changes
  to a pipeline (``PUT /api/pipelines/<uuid>``) are checked as anyone's. Mage 0.9.80 checks the
  owner's query parameters under that setting (``BasePolicy.authorize_query``) but lets every
  attribute the owner writes through (``BasePolicy.authorize_attributes``: ``self.is_owner()``
  returns True first), and its pipeline policy lets editors update a pipeline (its status, runs and
  trigger) while the other attributes need pipeline edit access: the owner could change a
  pipeline's name, blocks, settings or description in place (a new description rewrote
  ``pipelines/<uuid>/metadata.yaml``). Of 0.9.80's policies, the pipeline policy is the only one
  where an action the owner may take under that setting carries attributes that need edit access.

docker-compose, ``make editor`` and the tests start Mage this way; a plain ``mage start`` still
works, without the fixes.
"""

from __future__ import annotations

import functools
import sys


def install() -> None:
    """Install the project's fixes to Mage; calling it again changes nothing.

    Mage's settings must not be read before ``mage start`` has set the project's path: the queue
    module is imported on first use of the factory, and the sign-in and pipeline-edit fixes go in
    when ``mage start`` sets up its server.
    """
    _install_process_queue()
    _install_server_fixes_once_the_project_is_set()


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


def _install_server_fixes_once_the_project_is_set() -> None:
    """Install ``guard_sign_in`` and ``guard_pipeline_edits`` when ``mage start`` sets up its server.

    Mage's session resource and policies import Mage's database module, which picks Mage's database
    from the project's path on import: imported before ``mage start`` has set the path, Mage would
    keep its users and runs in the wrong database. ``mage start`` sets the path, imports its
    server, then calls ``mage_ai.server.setup.initialize_globals`` (looked up when called) and
    serves: the guards go in at that call, before the first request.
    """
    from mage_ai.server import setup

    mage_initialize_globals = setup.initialize_globals
    if getattr(mage_initialize_globals, "installed_by", None) == __name__:
        return

    @functools.wraps(mage_initialize_globals)
    def initialize_globals():
        guard_sign_in()
        guard_pipeline_edits()
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


def guard_pipeline_edits() -> None:
    """Check the owner's changes to a pipeline as anyone's while pipelines are not edited in place.

    With ``DISABLE_NOTEBOOK_EDIT_ACCESS`` 1 or 2 (and sign-in required), each attribute the owner
    writes to a pipeline must pass the pipeline policy's own write rule for the operation, as Mage
    checks anyone else's (``BasePolicy.authorize_attribute`` past its owner shortcut): a rule whose
    conditions all fail, or no rule, refuses the write with Mage's ``ApiError.UNAUTHORIZED_ACCESS``.
    The owner keeps what an editor may change there (status, runs, trigger); everything else goes
    on to Mage's ``authorize_attributes``. With pipeline edits allowed nothing changes.
    """
    import inspect

    from mage_ai.api.errors import ApiError
    from mage_ai.api.operations.constants import WRITE, OperationType
    from mage_ai.api.policies.PipelinePolicy import PipelinePolicy
    from mage_ai.settings import REQUIRE_USER_AUTHENTICATION, is_disable_pipeline_edit_access
    from mage_ai.settings.server import DISABLE_NOTEBOOK_EDIT_ACCESS

    mage_authorize_attributes = PipelinePolicy.authorize_attributes
    if getattr(mage_authorize_attributes, "installed_by", None) == __name__:
        return

    async def permitted(policy, attribute: str, operation: str) -> bool:
        rules = (type(policy).write_rule(attribute) or {}).get(policy.current_scope(), {})
        rules = rules.get(operation) or rules.get(OperationType.ALL)
        if not rules:
            return False
        overrides = type(policy).override_permission_write_rule(attribute) or {}
        overrides = overrides.get(policy.current_scope(), {})
        overrides = overrides.get(operation) or overrides.get(OperationType.ALL) or []
        conditions = [rule["condition"] for rule in rules if rule.get("condition")]
        if not conditions:
            return True
        conditions += [rule["override_permission_condition"] for rule in overrides
                       if rule.get("override_permission_condition")]
        for condition in conditions:
            passed = condition(policy)
            if inspect.isawaitable(passed):
                passed = await passed
            if passed:
                return True
        return False

    @functools.wraps(mage_authorize_attributes)
    async def authorize_attributes(self, read_or_write, attrbs, **kwargs):
        if (read_or_write == WRITE and REQUIRE_USER_AUTHENTICATION and is_disable_pipeline_edit_access()
                and self.is_owner()):
            operation = self.options.get("api_operation_action",
                                         kwargs.get("api_operation_action", OperationType.ALL))
            for attribute in attrbs:
                if not await permitted(self, attribute, operation):
                    # A copy: Mage's own code updates the class's error dict in place.
                    raise ApiError({**ApiError.UNAUTHORIZED_ACCESS, "message": (
                        f"Unauthorized write access for {attribute} on {type(self).resource_name()}"
                        f" for {operation} operation: pipelines are not edited in place"
                        f" (DISABLE_NOTEBOOK_EDIT_ACCESS={DISABLE_NOTEBOOK_EDIT_ACCESS}).")})
        return await mage_authorize_attributes(self, read_or_write, attrbs, **kwargs)

    authorize_attributes.installed_by = __name__
    PipelinePolicy.authorize_attributes = authorize_attributes


def main() -> int:
    from mage_ai.cli.main import app

    install()
    return app()


if __name__ == "__mp_main__":  # a child started by "spawn" re-imports this module as its main
    install()
if __name__ == "__main__":
    sys.exit(main())
