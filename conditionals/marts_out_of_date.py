"""Run the dbt build (and publish it) only when the marts are out of date: something they are
built from changed since their last publish. When not, the dbt block and everything after it
end as 'condition failed', Mage's word for skipped; the run succeeds."""
if 'condition' not in globals():
    from mage_ai.data_preparation.decorators import condition


@condition
def marts_out_of_date(plan, *args, **kwargs) -> bool:
    return not plan['up_to_date']
