"""When the dbt build fails: store the results of the tests it ran in ops.quality_results (the
evidence of why the marts were not published) and give up the marts' build lease. From the
notebook it runs in the session's kernel, so it names the run plan_marts_build named there."""
from mage_project import runs
from mage_project.pipelines import quality_gates

if 'on_failure' not in globals():
    from mage_ai.data_preparation.decorators import on_failure


@on_failure
def store_dbt_build_results(**kwargs):
    quality_gates.store_failed_build(runs.run_id_for(kwargs, notebook=quality_gates.EDITOR))
