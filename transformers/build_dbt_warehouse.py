"""Build the dbt project (staging -> intermediate -> marts) in the warehouse, with its tests.

A failing model or error-level test fails the block (and alerts). Returns what ran.
"""
from mage_project import checks, transform

if 'transformer' not in globals():
    from mage_ai.data_preparation.decorators import transformer
if 'test' not in globals():
    from mage_ai.data_preparation.decorators import test


@transformer
def build_dbt_warehouse(loads, *args, **kwargs):
    return transform.build(kwargs.get('dbt_select'))


@test
def test_dbt_build_passed(output, *args) -> None:
    checks.require(checks.dbt_build_passed(output))
