-- Activity events as loaded (one row per event_id already), with their UTC date.
with source as (
    select * from {{ source('raw', 'user_activity') }}
),

final as (
    select
        event_id,
        user_id,
        event_type,
        occurred_at,
        {{ utc_date('occurred_at') }} as occurred_date,
        session_id,
        page_url,
        properties,
        amount
    from source
)

select * from final
