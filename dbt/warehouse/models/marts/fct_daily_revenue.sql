-- One row per UTC date of paid_at with at least one payment that counts.
with payments as (
    select * from {{ ref('int_payments__counted') }}
),

final as (
    select
        paid_date as date,
        -- Money as numeric(18, 2) on every warehouse, whatever type a sum has there.
        cast(sum(amount) as numeric(18, 2)) as gross_revenue,
        cast(sum(case when is_refunded then amount else 0 end) as numeric(18, 2)) as refunds,
        cast(sum(case when is_refunded then 0 else amount end) as numeric(18, 2)) as net_revenue,
        count(distinct case when not is_refunded then customer_id end) as paying_customers
    from payments
    group by 1
)

select * from final
