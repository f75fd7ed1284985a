"""Every setting of the project, resolved from the environment in one place.

A missing required setting raises ``ConfigError`` naming the variable. Where a setting has an
embedded default (PostgreSQL, the landing zone), the default is picked here and nowhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(RuntimeError):
    """A setting is missing or malformed; the message names the environment variable."""


def _get(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    return value.strip()


def require(name: str) -> str:
    value = _get(name)
    if value is None:
        raise ConfigError(f"missing setting: environment variable {name} is not set")
    return value


def _number(name: str, default: float, kind: type = float, minimum: float | None = None):
    raw = _get(name)
    if raw is None:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"bad setting: {name}={raw!r} is not a {kind.__name__}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"bad setting: {name}={raw!r} must be at least {minimum}")
    return value


def _flag(name: str, default: bool = False) -> bool:
    raw = _get(name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"bad setting: {name}={raw!r} is not a boolean (true/false)")


def data_dir() -> Path:
    """Where generated state lives: the embedded database, landing files, Mage's variables."""
    path = Path(_get("PROJECT_DATA_DIR", str(PROJECT_ROOT / ".data"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    dbname: str
    user: str
    password: str | None
    connect_timeout: int
    embedded: bool

    def dsn_kwargs(self) -> dict:
        kwargs = {
            "host": self.host,
            "port": self.port,
            "dbname": self.dbname,
            "user": self.user,
            "connect_timeout": self.connect_timeout,
            "application_name": "mage_project",
        }
        if self.password:
            kwargs["password"] = self.password
        return kwargs


def postgres() -> PostgresSettings:
    """The warehouse PostgreSQL: the server in POSTGRES_HOST, else the embedded one.

    The names are Mage's own (io_config.yaml uses the same variables).
    """
    timeout = _number("POSTGRES_CONNECT_TIMEOUT", 10, int, minimum=1)
    dbname = _get("POSTGRES_DBNAME")
    host = _get("POSTGRES_HOST")
    if host is None:
        from mage_project.warehouse import embedded

        server = embedded.ensure_running(data_dir() / "postgres")
        name = dbname or "warehouse"
        embedded.ensure_database(server, name)
        return PostgresSettings(
            host=server.socket_dir,
            port=server.port,
            dbname=name,
            user=server.user,
            password=None,
            connect_timeout=timeout,
            embedded=True,
        )
    return PostgresSettings(
        host=host,
        port=_number("POSTGRES_PORT", 5432, int, minimum=1),
        dbname=dbname or require("POSTGRES_DBNAME"),
        user=require("POSTGRES_USER"),
        password=_get("POSTGRES_PASSWORD"),
        connect_timeout=timeout,
        embedded=False,
    )


WAREHOUSES = ("postgres", "snowflake")


def warehouse() -> str:
    """Where warehouse_elt loads and dbt builds: ``postgres`` (default) or ``snowflake``."""
    kind = (_get("WAREHOUSE") or "postgres").lower()
    if kind not in WAREHOUSES:
        raise ConfigError(f"bad setting: WAREHOUSE={kind!r} is not one of {', '.join(WAREHOUSES)}")
    return kind


@dataclass(frozen=True)
class SnowflakeSettings:
    account: str
    user: str
    password: str
    database: str
    warehouse: str
    role: str | None
    host: str | None  # a Snowflake-protocol server of your own; else <account>.snowflakecomputing.com
    port: int | None
    protocol: str
    login_timeout: int
    network_timeout: int
    lock_timeout: int

    def connect_kwargs(self) -> dict:
        kwargs = {
            "account": self.account,
            "user": self.user,
            "password": self.password,
            "database": self.database,
            "warehouse": self.warehouse,
            "protocol": self.protocol,
            "login_timeout": self.login_timeout,
            "network_timeout": self.network_timeout,
            "application": "mage_project",
            # Sessions in UTC: timestamps without a zone in the files mean UTC, as in PostgreSQL.
            # LOCK_TIMEOUT bounds the wait for another run's write lock (seconds, 0 = no wait).
            "session_parameters": {"TIMEZONE": "UTC", "LOCK_TIMEOUT": self.lock_timeout},
        }
        if self.role:
            kwargs["role"] = self.role
        if self.host:
            kwargs["host"] = self.host
        if self.port:
            kwargs["port"] = self.port
        return kwargs


def snowflake() -> SnowflakeSettings:
    """The Snowflake account (WAREHOUSE=snowflake). The names are Mage's own io_config ones."""
    protocol = (_get("SNOWFLAKE_PROTOCOL") or "https").lower()
    if protocol not in ("https", "http"):
        raise ConfigError(f"bad setting: SNOWFLAKE_PROTOCOL={protocol!r} is not https or http")
    return SnowflakeSettings(
        account=require("SNOWFLAKE_ACCOUNT"),
        user=require("SNOWFLAKE_USER"),
        password=require("SNOWFLAKE_PASSWORD"),
        database=require("SNOWFLAKE_DATABASE"),
        warehouse=require("SNOWFLAKE_WAREHOUSE"),
        role=_get("SNOWFLAKE_ROLE"),
        host=_get("SNOWFLAKE_HOST"),
        port=_number("SNOWFLAKE_PORT", 0, int, minimum=0) or None,
        protocol=protocol,
        login_timeout=_number("SNOWFLAKE_LOGIN_TIMEOUT", 60, int, minimum=1),
        network_timeout=_number("SNOWFLAKE_NETWORK_TIMEOUT", 600, int, minimum=1),
        lock_timeout=int(run_lock_timeout_seconds()),
    )


@dataclass(frozen=True)
class ActivityApiSettings:
    url: str
    token: str
    page_size: int
    connect_timeout: float
    read_timeout: float
    deadline_seconds: float
    max_pages: int
    backoff_base: float
    backoff_max: float


def activity_api() -> ActivityApiSettings:
    return ActivityApiSettings(
        url=require("ACTIVITY_API_URL").rstrip("/"),
        token=require("ACTIVITY_API_TOKEN"),
        page_size=_number("ACTIVITY_API_PAGE_SIZE", 1000, int, minimum=1),
        connect_timeout=_number("ACTIVITY_API_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        read_timeout=_number("ACTIVITY_API_READ_TIMEOUT", 30.0, minimum=0.1),
        deadline_seconds=_number("ACTIVITY_API_DEADLINE_SECONDS", 900.0, minimum=1),
        max_pages=_number("ACTIVITY_API_MAX_PAGES", 100_000, int, minimum=1),
        backoff_base=_number("ACTIVITY_API_BACKOFF_BASE", 0.5, minimum=0),
        backoff_max=_number("ACTIVITY_API_BACKOFF_MAX", 60.0, minimum=0),
    )


def landing_url() -> str:
    return _get("LANDING_URL") or (data_dir() / "landing").as_uri()


def landing_chunk_rows() -> int:
    return _number("LANDING_CHUNK_ROWS", 100_000, int, minimum=1)


def work_dir() -> Path:
    """Local scratch space for validated files between the transformer and the exporter."""
    path = Path(_get("WORK_DIR", str(data_dir() / "work"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def activity_lookback_hours() -> float:
    return _number("ACTIVITY_LOOKBACK_HOURS", 24.0, minimum=0)


def run_lock_timeout_seconds() -> float:
    return _number("RUN_LOCK_TIMEOUT_SECONDS", 300.0, minimum=0)


def marts_build_lease_seconds() -> float:
    """How long a run that started building the marts holds them before another run may take
    over (it gives them up sooner when it publishes or fails): the bound on a killed run."""
    return _number("MARTS_BUILD_LEASE_SECONDS", 10800.0, minimum=60)


@dataclass(frozen=True)
class SmtpSettings:
    host: str | None
    port: int
    user: str | None
    password: str | None
    starttls: bool
    ssl: bool
    mail_from: str
    to: list[str]


def smtp() -> SmtpSettings:
    to = [a.strip() for a in (_get("ALERT_EMAIL_TO") or "").split(",") if a.strip()]
    host = _get("SMTP_HOST")
    if host is not None and not to:
        raise ConfigError("missing setting: SMTP_HOST is set but ALERT_EMAIL_TO is not")
    return SmtpSettings(
        host=host,
        port=_number("SMTP_PORT", 25, int, minimum=1),
        user=_get("SMTP_USER"),
        password=_get("SMTP_PASSWORD"),
        starttls=_flag("SMTP_STARTTLS", False),
        ssl=_flag("SMTP_SSL", False),
        mail_from=_get("ALERT_EMAIL_FROM", "mage-pipelines@localhost"),
        to=to,
    )
