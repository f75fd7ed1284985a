{# Models go to the schema their folder names (staging, marts), not <target>_<schema>.
   With var audit (write-audit-publish), the published schemas build into their audit schema. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
    {%- set schema = custom_schema_name | trim if custom_schema_name is not none else target.schema -%}
    {%- if var('audit') and schema in var('published_schemas') -%}
        {{ audit_schema_name(schema) }}
    {%- else -%}
        {{ schema }}
    {%- endif -%}
{%- endmacro %}
