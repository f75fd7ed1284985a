-- Ad spend per date and campaign, summed over channels.
with spend as (
    select * from {{ ref('stg_marketing__ad_spend') }}
),

final as (
    select
        spend_date,
        campaign,
        sum(spend) as spend,
        sum(impressions) as impressions,
        sum(clicks) as clicks
    from spend
    group by 1, 2
)

select * from final
