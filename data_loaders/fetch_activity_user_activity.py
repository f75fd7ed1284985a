"""Fetch the run's window of user-activity events from the activity API into the landing zone.

Returns a manifest (landing files and row counts), not the events.
Pipeline variables: window_start / window_end (an explicit window, UTC), sample_rows (keep
interactive runs small), run_id (set by the command-line runner).
"""
from mage_project import checks, runs
from mage_project.pipelines import user_activity

if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_loader
def fetch_activity_user_activity(*args, **kwargs):
    return user_activity.fetch(
        run_id=runs.run_id_for(kwargs),
        window_start=kwargs.get('window_start'),
        window_end=kwargs.get('window_end'),
        execution_date=runs.execution_date_for(kwargs),
        sample_rows=kwargs.get('sample_rows'),
    )


@test
def test_landing_files_complete(output, *args) -> None:
    checks.require(checks.landing_files_complete(output))
