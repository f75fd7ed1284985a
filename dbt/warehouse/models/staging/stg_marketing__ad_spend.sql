-- One row per (date, campaign, channel): the row of the latest file (by its path date, then
-- its name), so a restated row replaces the earlier one.
with source as (
    select * from {{ source('raw', 'marketing__ad_spend') }}
),

ranked as (
    select
        date as spend_date,
        campaign,
        channel,
        spend,
        impressions,
        clicks,
        row_number() over (
            partition by date, campaign, channel
            order by split_part(_file_key, '/', 3) desc, _file_key desc, _row_number desc
        ) as version_rank
    from source
),

final as (
    select
        spend_date,
        campaign,
        channel,
        spend,
        impressions,
        clicks
    from ranked
    where version_rank = 1
)

select * from final
