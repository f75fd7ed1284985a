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
        count(case when event_type = 'purchase' then 1 end) as purchases,
        -- The same money type on every warehouse (Snowflake has no aggregate FILTER clause).
        cast(
            coalesce(sum(case when event_type = 'purchase' then amount end), 0)
            as numeric(18, 2)
        ) as purchase_amount
    from events
    group by 1
)

select * from final
