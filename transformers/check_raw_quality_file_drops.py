"""The quality gate on the raw loads: Great Expectations suites (declared beside the entities)
over every loaded file version not yet passed; every result goes to ops.quality_results.

An error-level failure fails the block, so the dbt build never runs and the marts stay as
they were (and the run alerts). Returns a summary of the checks.
"""
from mage_project import checks, runs
from mage_project.pipelines import quality_gates

if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def check_raw_quality_file_drops(loads, *args, **kwargs):
    return quality_gates.check_raw_file_drops(run_id=runs.run_id_for(kwargs))


@test
def test_raw_quality_passed(output, *args) -> None:
    checks.require(checks.raw_quality_passed(output))
