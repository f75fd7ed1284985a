-- One row per (date, campaign) present in ad spend or in customer signups.
with spend as (
    select * from {{ ref('int_ad_spend__daily') }}
),

signups as (
    select * from {{ ref('int_campaign_signups__daily') }}
),

final as (
    select
        coalesce(spend.spend_date, signups.signup_date) as date,
        coalesce(spend.campaign, signups.campaign) as campaign,
        cast(coalesce(spend.spend, 0) as numeric(18, 2)) as spend,
        cast(coalesce(spend.impressions, 0) as bigint) as impressions,
        cast(coalesce(spend.clicks, 0) as bigint) as clicks,
        coalesce(signups.signups, 0) as signups
    from spend
    full outer join signups
        on spend.spend_date = signups.signup_date and spend.campaign = signups.campaign
)

select * from final
