"""When a block of user_activity_ingest fails, record the failed run in ops.pipeline_runs.

Mage's scheduler emails the alert itself (metadata.yaml's notification_config); this keeps
the project's own run log complete.
"""
from mage_project.pipelines import user_activity

if 'on_failure' not in globals():
    from mage_ai.data_preparation.decorators import on_failure


@on_failure
def record_user_activity_failure(**kwargs):
    user_activity.record_block_failure(kwargs, kwargs.get('__error'))
