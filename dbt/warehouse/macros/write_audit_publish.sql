{# Write-audit-publish of the published schemas (var published_schemas: the marts).

   `dbt build --vars '{audit: true}'` builds them into <schema>__audit (generate_schema_name)
   and runs every test there; only when all passed does the project's runner call
   `dbt run-operation publish_audit_schemas`, which swaps each audit schema in atomically.
   Consumers of the marts see the previous build or the new one, never a half-built one; a
   failed build leaves the marts as they were and its audit schema for inspection. #}

{% macro audit_schema_name(schema) -%}
    {{ schema ~ '__audit' }}
{%- endmacro %}


{# A schema or table name the publish writes into its SQL: dbt quotes a name without escaping a
   quote in it, and a schema goes into string literals too. So a name that is not plain (as dbt
   names the models) is refused, before any statement of the publish runs. #}
{% macro plain_name(name, what) -%}
    {%- if not modules.re.fullmatch('[A-Za-z_][A-Za-z0-9_$]*', name | string) -%}
        {{ exceptions.raise_compiler_error(
            what ~ " [" ~ name ~ "] is not a plain name (letters, digits, _ or $, not starting with"
            ~ " a digit): nothing is published") }}
    {%- endif -%}
    {{ name }}
{%- endmacro %}


{# on-run-start: an audit build starts from empty audit schemas, so nothing left from an
   earlier build (a model since removed) is published with it. #}
{% macro reset_audit_schemas() %}
    {% if execute and var('audit') %}
        {% for schema in var('published_schemas') %}
            {% do plain_name(schema, 'the published schema') %}
            {% set audit = api.Relation.create(database=target.database, schema=audit_schema_name(schema)) %}
            {% do adapter.drop_schema(audit) %}
            {% do adapter.create_schema(audit) %}
        {% endfor %}
    {% endif %}
{% endmacro %}


{% macro publish_audit_schemas() %}
    {% for schema in var('published_schemas') %}
        {% do plain_name(schema, 'the published schema') %}
    {% endfor %}
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
    {% for row in built %}
        {% do plain_name(row['name'], 'the relation of ' ~ audit) %}
    {% endfor %}
    {% call statement('publish_schema', auto_begin=True) %}
        create schema if not exists {{ adapter.quote(schema) }};
        {% for row in built %}
            {% set current = adapter.get_relation(
                database=target.database, schema=schema, identifier=row['name']) %}
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


{# Snowflake: DDL commits on its own, so no transaction spans the tables. Each audited table
   replaces its published one by a zero-copy clone (CREATE OR REPLACE ... CLONE, atomic per
   table), then the audit schema is dropped. A consumer reading two marts during the publish
   (a few statements) can see one new and one previous table. ALTER SCHEMA ... SWAP WITH would
   exchange all of them at once, but fakesnow, the stand-in the tests run, does not implement
   it, and the path the tests run must be the one that runs on Snowflake. The published schema
   stays, with its grants; give consumers future grants on it for new tables. #}
{% macro snowflake__publish_schema(schema, audit) %}
    {% do plain_name(target.database, 'the database') %}
    {% set published = api.Relation.create(database=target.database, schema=schema) %}
    {% do adapter.create_schema(published) %}
    {% set built = run_query(
        "select table_name, table_type from " ~ adapter.quote(target.database) ~ ".information_schema.tables"
        ~ " where table_schema = '" ~ (audit | upper) ~ "' order by table_name") %}
    {# Every table checked before the first is cloned: a refusal publishes nothing. #}
    {% for row in built.rows %}
        {% do plain_name(row[0], 'the table of ' ~ audit) %}
        {% if row[1] != 'BASE TABLE' %}
            {{ exceptions.raise_compiler_error(
                "cannot publish " ~ audit ~ "." ~ row[0] ~ " (" ~ row[1] ~ "): only tables are published") }}
        {% endif %}
    {% endfor %}
    {% for row in built.rows %}
        {% set source = api.Relation.create(
            database=target.database, schema=audit, identifier=row[0], type='table') %}
        {% set destination = api.Relation.create(
            database=target.database, schema=schema, identifier=row[0], type='table') %}
        {% do run_query("create or replace table " ~ destination ~ " clone " ~ source) %}
    {% endfor %}
    {% do adapter.drop_schema(api.Relation.create(database=target.database, schema=audit)) %}
{% endmacro %}
