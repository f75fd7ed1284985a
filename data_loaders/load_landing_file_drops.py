"""Load every new landing file version into its raw table, exactly once.

Valid rows go append-only into raw.<source>__<entity> with their file's lineage, bad rows
into raw.load_rejects, each version into ops.file_manifest. A file that cannot be read is
recorded 'failed' (loaded again once rewritten), one that failed for a local reason (disk, work
dir, the connection) 'error' (loaded again by the next run); both are alerted and block no
other file. Returns a summary of the files.
"""
from mage_project import checks, runs
from mage_project.pipelines import file_drops

if 'data_loader' not in globals():
    from mage_ai.data_preparation.decorators import data_loader
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_loader
def load_landing_file_drops(*args, **kwargs):
    return file_drops.load_new_files(run_id=runs.run_id_for(kwargs))


@test
def test_file_loads_reconcile(output, *args) -> None:
    checks.require(checks.file_loads_reconcile(output))
