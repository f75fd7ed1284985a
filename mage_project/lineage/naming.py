"""Dataset names by OpenLineage's naming conventions (openlineage.io/docs/spec/naming), so that
another producer's events about the same tables (Airflow's provider, dbt-ol, Spark) join the same
nodes of the graph:

- PostgreSQL: namespace ``postgres://{host}:{port}``, name ``{database}.{schema}.{table}``
  (the embedded server listens on a unix socket: ``localhost`` and its port);
- Snowflake: namespace ``snowflake://{organization}-{account}`` (the account identifier, lower
  case), name ``{DATABASE}.{SCHEMA}.{TABLE}`` (upper case, as Snowflake stores plain names);
- the landing zone: ``s3://{bucket}`` with the key prefix, or ``file`` with the absolute path;
- the activity API: its base URL, with the path of its events.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from mage_project import config


def warehouse_namespace() -> str:
    if config.warehouse() == "snowflake":
        return f"snowflake://{config.snowflake().account.lower()}"
    settings = config.postgres()
    if settings.embedded:  # running: the run is using it; its port from its postmaster file alone
        from mage_project.warehouse import embedded

        return f"postgres://localhost:{embedded.ensure_running(settings.pgdata).port}"
    host = "localhost" if str(settings.host).startswith("/") else settings.host  # a socket directory
    return f"postgres://{host}:{settings.port}"


def table(relation: str) -> tuple[str, str]:
    """The (namespace, name) of the warehouse's ``schema.table``."""
    if config.warehouse() == "snowflake":
        return warehouse_namespace(), f"{config.snowflake().database}.{relation}".upper()
    return warehouse_namespace(), f"{config.postgres().dbname}.{relation}"


def relation_of(name: str) -> str:
    """``schema.table`` of a dataset ``table`` named (the inverse of its name part)."""
    return ".".join(name.split(".")[-2:]).lower()


def landing(url: str, prefix: str) -> tuple[str, str]:
    """The landing zone's files under ``prefix``, as one dataset."""
    parts = urlsplit(url)
    if parts.scheme == "s3":
        base = parts.path.strip("/")
        return f"s3://{parts.netloc}", "/".join(p for p in (base, prefix.strip("/")) if p)
    return "file", f"{parts.path.rstrip('/')}/{prefix.strip('/')}"


def http_api(base_url: str, path: str) -> tuple[str, str]:
    parts = urlsplit(base_url)
    return f"{parts.scheme}://{parts.netloc}", f"{parts.path.rstrip('/')}{path}"
