-- One row per customer: its latest version (latest updated_at; on a tie, the later file).
with source as (
    select * from {{ source('raw', 'crm__customers') }}
),

ranked as (
    select
        customer_id,
        email,
        full_name,
        country,
        signup_at,
        nullif(utm_campaign, '') as utm_campaign,
        updated_at,
        row_number() over (
            partition by customer_id
            order by updated_at desc, _file_key desc, _row_number desc
        ) as version_rank
    from source
),

final as (
    select
        customer_id,
        email,
        full_name,
        country,
        signup_at,
        utm_campaign,
        updated_at
    from ranked
    where version_rank = 1
)

select * from final
