-- One row per payment: its latest version (a later file can refund it).
with source as (
    select * from {{ source('raw', 'billing__payments') }}
),

ranked as (
    select
        payment_id,
        customer_id,
        amount,
        status,
        paid_at,
        updated_at,
        row_number() over (
            partition by payment_id
            order by updated_at desc, _file_key desc, _row_number desc
        ) as version_rank
    from source
),

final as (
    select
        payment_id,
        customer_id,
        amount,
        status,
        paid_at,
        updated_at
    from ranked
    where version_rank = 1
)

select * from final
