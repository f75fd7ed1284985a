{# The rows of model for which expression is not true: an invariant of a model's rows, as
   jaffle-shop states them with dbt_utils.expression_is_true (dbt Hub is out of reach here).

   On a model, expression is a whole condition (`net_revenue = gross_revenue - refunds`); under a
   column, it follows the column (`>= 0`). A NULL verdict fails too: an invariant that cannot be
   evaluated does not hold. #}
{% test expression_is_true(model, expression, column_name=none) %}

with tested as (
    select * from {{ model }}
),

final as (
    select *
    from tested
    where not coalesce(({{ column_name ~ ' ' if column_name else '' }}{{ expression }}), false)
)

select * from final

{% endtest %}
