{# Write-audit-publish of the published schemas (var published_schemas: the marts).

   `dbt build --vars '{audit: true}'` builds them into <schema>__audit (generate_schema_name)
   and runs every test there; only when all passed does the project's runner call
   `dbt run-operation publish_audit_schemas`, which swaps each audit schema in atomically.
   Consumers of the marts see the previous build or the new one, never a half-built one; a
   failed build leaves the marts as they were and its audit schema for inspection. #}

{% macro audit_schema_name(schema) -%}
    {{ schema ~ '__audit' }}
{%- endmacro %}


{# on-run-start: an audit build starts from empty audit schemas, so nothing left from an
   earlier build (a model since removed) is published with it. #}
{% macro reset_audit_schemas() %}
    {% if execute and var('audit') %}
        {% for schema in var('published_schemas') %}
            {% set audit = api.Relation.create(database=target.database, schema=audit_schema_name(schema)) %}
            {% do adapter.drop_schema(audit) %}
            {% do adapter.create_schema(audit) %}
        {% endfor %}
    {% endif %}
{% endmacro %}


{% macro publish_audit_schemas() %}
    {% for schema in var('published_schemas') %}
        {% set audit = audit_schema_name(schema) %}
        {% if not adapter.check_schema_exists(target.database, audit) %}
            {{ exceptions.raise_compiler_error("nothing to publish: schema " ~ audit ~ " does not exist") }}
        {% endif %}
        {% do adapter.dispatch('publish_schema', 'warehouse')(schema, audit) %}
        {{ log("published " ~ audit ~ " as " ~ schema, info=true) }}
    {% endfor %}
{% endmacro %}


{# PostgreSQL (and any warehouse with transactional DDL): in one transaction, move every
   relation of the audit schema into the published schema, replacing the one of the same name.
   The published schema itself stays (its grants and default privileges with it); relations of
   it that the audit build does not hold are left alone. #}
{% macro default__publish_schema(schema, audit) %}
    {% set audit_relation = api.Relation.create(database=target.database, schema=audit) %}
    {% set built = list_relations_without_caching(audit_relation) %}
    {% call statement('publish_schema', auto_begin=True) %}
        create schema if not exists {{ adapter.quote(schema) }};
        {% for row in built %}
            {% set current = adapter.get_relation(database=target.database, schema=schema, identifier=row['name']) %}
            {% if current is not none %}
                drop {{ relation_kind(current.type) }} {{ current }} cascade;
            {% endif %}
            alter {{ relation_kind(row['type']) }}
                {{ adapter.quote(audit) }}.{{ adapter.quote(row['name']) }} set schema {{ adapter.quote(schema) }};
        {% endfor %}
        drop schema {{ adapter.quote(audit) }};
    {% endcall %}
    {% do adapter.commit() %}
{% endmacro %}


{% macro relation_kind(type) -%}
    {{ {'view': 'view', 'materialized_view': 'materialized view'}.get(type | string, 'table') }}
{%- endmacro %}


{# Snowflake: DDL commits on its own, so one statement does it: ALTER SCHEMA ... SWAP WITH
   exchanges the two schemas atomically, and the audit schema then holds the previous build,
   which is dropped. Privileges go with the schema: grant consumers access through future
   grants on the database or a managed-access schema, not on the marts schema alone. #}
{% macro snowflake__publish_schema(schema, audit) %}
    {% set published = api.Relation.create(database=target.database, schema=schema) %}
    {% set audited = api.Relation.create(database=target.database, schema=audit) %}
    {% if adapter.check_schema_exists(target.database, schema) %}
        {% do run_query("alter schema " ~ audited ~ " swap with " ~ published) %}
        {% do adapter.drop_schema(audited) %}
    {% else %}
        {% do run_query("alter schema " ~ audited ~ " rename to " ~ published) %}
    {% endif %}
{% endmacro %}
