-- Customers signed up per UTC date and utm campaign (customers without a campaign excluded).
with customers as (
    select * from {{ ref('stg_crm__customers') }}
),

final as (
    select
        {{ utc_date('signup_at') }} as signup_date,
        utm_campaign as campaign,
        count(*) as signups
    from customers
    where utm_campaign is not null
    group by 1, 2
)

select * from final
