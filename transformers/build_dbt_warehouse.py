"""Build the dbt project (staging -> intermediate -> marts) in the warehouse, with its tests,
write-audit-publish: the marts build into marts__audit, every test runs there and its result
goes to ops.quality_results, and only when all passed are the marts swapped in.

A failing model or error-level test fails the block (and alerts), the marts left as they were.
Returns what ran.
"""
from mage_project import checks, runs
from mage_project.pipelines import quality_gates

if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def build_dbt_warehouse(gate, *args, **kwargs):
    return quality_gates.build_and_publish(run_id=runs.run_id_for(kwargs),
                                           select=kwargs.get('dbt_select'))


@test
def test_dbt_build_passed(output, *args) -> None:
    checks.require(checks.dbt_build_passed(output))


@test
def test_marts_published(output, *args) -> None:
    checks.require(checks.marts_published(output))
