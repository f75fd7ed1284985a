-- Payments that count for revenue (latest status succeeded or refunded), with their UTC date.
-- Failed payments count nowhere.
with payments as (
    select * from {{ ref('stg_billing__payments') }}
),

final as (
    select
        payment_id,
        customer_id,
        amount,
        status,
        paid_at,
        {{ utc_date('paid_at') }} as paid_date,
        status = 'refunded' as is_refunded
    from payments
    where status in ('succeeded', 'refunded')
)

select * from final
