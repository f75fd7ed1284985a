"""Load the validated events into raw.user_activity in one transaction.

COPY into staging, upsert (the later delivery of an event wins), rejects into
raw.user_activity_rejects, the watermark and the run's row in ops.pipeline_runs.
"""
from mage_project import checks
from mage_project.pipelines import user_activity

if 'data_exporter' not in globals():
    from mage_ai.data_preparation.decorators import data_exporter
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_exporter
def load_postgres_user_activity(validated, *args, **kwargs):
    return user_activity.load(validated)


@test
def test_load_reconciles(output, *args) -> None:
    checks.require(checks.load_reconciles(output))
