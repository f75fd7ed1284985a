-- One row per UTC date of occurred_at in the activity events.
with events as (
    select * from {{ ref('stg_activity__user_activity') }}
),

final as (
    select
        occurred_date as date,
        count(distinct user_id) as active_users,
        count(distinct session_id) as sessions,
        count(*) as events,
        count(*) filter (where event_type = 'purchase') as purchases,
        coalesce(sum(amount) filter (where event_type = 'purchase'), 0) as purchase_amount
    from events
    group by 1
)

select * from final
