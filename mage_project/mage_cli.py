"""Mage's own command line with the project's fixes to mage-ai 0.9.80 installed first.

``python -m mage_project.mage_cli start PROJECT --host ... --port ...`` is ``mage start``
whose scheduler queues block runs through ``mage_queue.ProcessQueue`` (Mage's process queue
loses or doubles block runs under load, see that module). docker-compose, ``make editor``
and the tests start Mage this way; a plain ``mage start`` still works, without the fix.
"""

from __future__ import annotations

import sys


def install() -> None:
    """Make Mage's queue factory build the project's process queue.

    Only the factory is patched here: the queue module imports Mage's settings, which must not
    be read before ``mage start`` has set the project's path, so it is imported on first use.
    """
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


def main() -> int:
    from mage_ai.cli.main import app

    install()
    return app()


if __name__ == "__mp_main__":  # a child started by "spawn" re-imports this module as its main
    install()
if __name__ == "__main__":
    sys.exit(main())
