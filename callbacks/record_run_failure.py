"""When a block fails, record the failed run of its pipeline in ops.pipeline_runs.

Mage's scheduler emails the alert itself (metadata.yaml's notification_config); this keeps
the project's own run log complete.
"""
from mage_project import runs

if 'on_failure' not in globals():
    from mage_ai.data_preparation.decorators import on_failure


@on_failure
def record_run_failure(**kwargs):
    runs.record_block_failure(kwargs, kwargs.get('__error'))
