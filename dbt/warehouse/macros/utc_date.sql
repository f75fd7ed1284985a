{# The UTC calendar date of a timestamp with time zone, whatever the session's time zone. #}
{% macro utc_date(column) -%}
    {{ return(adapter.dispatch('utc_date', 'warehouse')(column)) }}
{%- endmacro %}

{% macro default__utc_date(column) -%}
    cast(({{ column }} at time zone 'UTC') as date)
{%- endmacro %}

{% macro snowflake__utc_date(column) -%}
    cast(convert_timezone('UTC', {{ column }}) as date)
{%- endmacro %}
