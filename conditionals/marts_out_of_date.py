"""Run the dbt build (and publish it) only when the marts are out of date (something they are
built from changed since their last publish) and this run still holds their build lease (a run
that Mage resumed after a crash may have lost it to the next run, which builds them). When not,
the dbt block and everything after it end as 'condition failed', Mage's word for skipped; the
run succeeds."""
from mage_project.pipelines import quality_gates

if 'condition' not in globals():
    from mage_ai.data_preparation.decorators import condition


@condition
def marts_out_of_date(plan, *args, **kwargs) -> bool:
    return quality_gates.build_still_planned(plan)
