{# The rows of model whose column_name exceeds the number of distinct values of `distinct` in
   `to` for the same group (model's group_by = to's to_group_by): a count of a subset (paying
   customers of a day) is at most the count of the whole (the day's customers). A group absent
   from `to` counts 0. #}
{% test at_most_distinct_count(model, column_name, to, distinct, group_by, to_group_by) %}

with tested as (
    select * from {{ model }}
),

whole as (
    select
        {{ to_group_by }} as group_key,
        count(distinct {{ distinct }}) as distinct_count
    from {{ to }}
    group by 1
),

final as (
    select
        tested.{{ group_by }} as group_key,
        tested.{{ column_name }} as tested_count,
        coalesce(whole.distinct_count, 0) as distinct_count
    from tested
    left join whole on tested.{{ group_by }} = whole.group_key
    where not coalesce(tested.{{ column_name }} <= coalesce(whole.distinct_count, 0), false)
)

select * from final

{% endtest %}
