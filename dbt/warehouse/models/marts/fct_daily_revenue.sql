-- One row per UTC date of paid_at with at least one payment that counts.
with payments as (
    select * from {{ ref('int_payments__counted') }}
),

final as (
    select
        paid_date as date,
        sum(amount) as gross_revenue,
        sum(case when is_refunded then amount else 0 end) as refunds,
        sum(amount) - sum(case when is_refunded then amount else 0 end) as net_revenue,
        count(distinct case when not is_refunded then customer_id end) as paying_customers
    from payments
    group by 1
)

select * from final
