-- One row per customer (latest version). No email or name: personal data stays in staging.
with customers as (
    select * from {{ ref('stg_crm__customers') }}
),

payments as (
    select * from {{ ref('int_payments__counted') }}
),

customer_payments as (
    select
        customer_id,
        min(paid_at) as first_paid_at,
        sum(case when is_refunded then 0 else amount end) as lifetime_net_revenue
    from payments
    group by 1
),

final as (
    select
        customers.customer_id,
        customers.country,
        customers.signup_at,
        {{ utc_date('customers.signup_at') }} as signup_date,
        customers.utm_campaign,
        customer_payments.first_paid_at,
        cast(coalesce(customer_payments.lifetime_net_revenue, 0) as numeric(18, 2))
            as lifetime_net_revenue
    from customers
    left join customer_payments on customers.customer_id = customer_payments.customer_id
)

select * from final
