"""Publish the audited marts: store every dbt test result of the build in ops.quality_results,
then, when all passed, swap the marts built in marts__audit in (write-audit-publish). Gives up
the marts' build lease whatever happens. Returns what ran, with `published`.
"""
from mage_project import checks
from mage_project.pipelines import quality_gates

if 'data_exporter' not in globals():
    from mage_ai.data_preparation.decorators import data_exporter
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@data_exporter
def publish_marts(build, plan, *args, **kwargs):
    return quality_gates.publish_build(plan)


@test
def test_dbt_build_passed(output, *args) -> None:
    checks.require(checks.dbt_build_passed(output))


@test
def test_marts_published(output, *args) -> None:
    checks.require(checks.marts_published(output))
