"""Every setting of the project, resolved from the environment in one place.

A missing required setting raises ``ConfigError`` naming the variable. Where a setting has an
embedded default (PostgreSQL, the landing zone), the default is picked here and nowhere else.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

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


def _number(name: str, default: float, kind: type = float, minimum: float | None = None,
            maximum: float | None = None, why: str = ""):
    """The setting ``name`` as a ``kind``, between ``minimum`` and ``maximum`` when given.

    ``why`` says where a bound comes from, so a refused value explains itself.
    """
    raw = _get(name)
    if raw is None:
        return kind(default)
    try:
        value = kind(raw)
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise ConfigError(f"bad setting: {name}={raw!r} is not a {what}") from None
    if not math.isfinite(value):  # float('nan') passes every comparison below
        raise ConfigError(f"bad setting: {name}={raw!r} is not a finite number")
    reason = f" ({why})" if why else ""
    if minimum is not None and value < minimum:
        raise ConfigError(f"bad setting: {name}={raw!r} must be at least {_plain(minimum)}{reason}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"bad setting: {name}={raw!r} must be at most {_plain(maximum)}{reason}")
    return value


def _plain(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _port(name: str, default: int) -> int:
    return _number(name, default, int, minimum=1, maximum=65535, why="a TCP port")


def _flag(name: str, default: bool = False) -> bool:
    raw = _get(name)
    if raw is None:
        return default
    if raw.lower() in {"1", "true", "yes", "on"}:
        return True
    if raw.lower() in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"bad setting: {name}={raw!r} is not a boolean (true/false)")


def _data_path() -> Path:
    return Path(_get("PROJECT_DATA_DIR", str(PROJECT_ROOT / ".data"))).expanduser().resolve()


def data_dir() -> Path:
    """Where generated state lives: the embedded database, landing files, Mage's variables."""
    path = _data_path()
    path.mkdir(parents=True, exist_ok=True)
    return path


# What each of the project's connections may do (README "Warehouse roles"): the owner runs the
# migrations and owns the schemas; each of the others logs in as its own login (a member of its
# PostgreSQL role, which the migrations grant), or as POSTGRES_USER where it has none.
OWNER, LOADER, TRANSFORMER, ANALYST = "owner", "loader", "transformer", "analyst"
ROLES = (LOADER, TRANSFORMER, ANALYST)
# The PostgreSQL role of each; on the embedded server, its login too.
POSTGRES_ROLES = {role: f"mage_{role}" for role in ROLES}


@dataclass(frozen=True)
class PostgresSettings:
    """A PostgreSQL server of one's own (POSTGRES_HOST), or the embedded one (``embedded``):
    then ``pgdata`` says where it keeps its data, and ``host``, ``port`` and ``user`` are None
    until the warehouse layer (``warehouse.postgres.resolve_settings``) has started it.
    ``role``: the project role whose login this is (one of ``ROLES``; None for the owner)."""

    host: str | None
    port: int | None
    dbname: str
    user: str | None
    password: str | None
    connect_timeout: int
    embedded: bool
    pgdata: Path | None = None
    role: str | None = None

    def dsn_kwargs(self) -> dict:
        if self.host is None:
            # libpq would quietly try its default socket: a server that is not this one.
            raise ConfigError("the embedded PostgreSQL is not started yet: connect through"
                              " mage_project.warehouse.postgres, which starts it")
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


def postgres(role: str = OWNER) -> PostgresSettings:
    """The warehouse PostgreSQL as ``role`` (``OWNER`` or one of ``ROLES``) connects to it: the
    server in POSTGRES_HOST, else the embedded one.

    The login is POSTGRES_<ROLE>_USER / POSTGRES_<ROLE>_PASSWORD where set, else POSTGRES_USER /
    POSTGRES_PASSWORD. Only reads the environment: the embedded server is started by the warehouse
    layer when it first connects. The names are Mage's own (io_config.yaml uses the same variables).
    """
    if role != OWNER and role not in ROLES:
        raise ValueError(f"unknown warehouse role {role!r}: one of {(OWNER, *ROLES)}")
    timeout = _number("POSTGRES_CONNECT_TIMEOUT", 10, int, minimum=1)
    dbname = _get("POSTGRES_DBNAME")
    if dbname is not None and (bad := sorted({c for c in dbname if c in "\"'\\" or ord(c) < 32})):
        # The driver quotes any name, but dbt writes the database between quotes unescaped.
        raise ConfigError(f"bad setting: POSTGRES_DBNAME={dbname!r} holds {', '.join(map(repr, bad))}:"
                          " name the database without quotes, backslashes or control characters")
    host = _get("POSTGRES_HOST")
    granted = None if role == OWNER else role
    if host is None:
        return PostgresSettings(
            host=None,
            port=None,
            dbname=dbname or "warehouse",
            user=None,
            password=None,
            connect_timeout=timeout,
            embedded=True,
            pgdata=_data_path() / "postgres",
            role=granted,
        )
    own = f"POSTGRES_{role.upper()}_USER"
    return PostgresSettings(
        host=host,
        port=_port("POSTGRES_PORT", 5432),
        dbname=dbname or require("POSTGRES_DBNAME"),
        user=_get(own) or require("POSTGRES_USER"),
        password=_get(f"POSTGRES_{role.upper()}_PASSWORD") if _get(own) else _get("POSTGRES_PASSWORD"),
        connect_timeout=timeout,
        embedded=False,
        role=granted,
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


_SNOWFLAKE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]*")


def _snowflake_name(setting: str, value: str | None) -> str | None:
    """A Snowflake object's name as set, refused unless plain: dbt-snowflake writes the database
    unquoted into every relation, and the project quotes only plain names."""
    if value is not None and not _SNOWFLAKE_NAME.fullmatch(value):
        raise ConfigError(f"bad setting: {setting}={value!r} is not a plain name (letters, digits, _"
                          " or $, not starting with a digit)")
    return value


def snowflake_role(role: str) -> str | None:
    """SNOWFLAKE_<ROLE>_ROLE: the Snowflake role the project's ``role`` connects in, if set."""
    return _get(f"SNOWFLAKE_{role.upper()}_ROLE")


def snowflake(role: str = OWNER) -> SnowflakeSettings:
    """The Snowflake account (WAREHOUSE=snowflake) as ``role`` connects to it: the role
    SNOWFLAKE_<ROLE>_ROLE where set (the grants of ``warehouse roles``), else SNOWFLAKE_ROLE.
    The names are Mage's own io_config ones."""
    if role != OWNER and role not in ROLES:
        raise ValueError(f"unknown warehouse role {role!r}: one of {(OWNER, *ROLES)}")
    protocol = (_get("SNOWFLAKE_PROTOCOL") or "https").lower()
    if protocol not in ("https", "http"):
        raise ConfigError(f"bad setting: SNOWFLAKE_PROTOCOL={protocol!r} is not https or http")
    return SnowflakeSettings(
        account=require("SNOWFLAKE_ACCOUNT"),
        user=require("SNOWFLAKE_USER"),
        password=require("SNOWFLAKE_PASSWORD"),
        database=_snowflake_name("SNOWFLAKE_DATABASE", require("SNOWFLAKE_DATABASE")),
        warehouse=_snowflake_name("SNOWFLAKE_WAREHOUSE", require("SNOWFLAKE_WAREHOUSE")),
        role=_snowflake_name(f"SNOWFLAKE_{role.upper()}_ROLE" if snowflake_role(role) else "SNOWFLAKE_ROLE",
                             snowflake_role(role) or _get("SNOWFLAKE_ROLE")),
        host=_get("SNOWFLAKE_HOST"),
        port=_port("SNOWFLAKE_PORT", 0) if _get("SNOWFLAKE_PORT") else None,
        protocol=protocol,
        login_timeout=_number("SNOWFLAKE_LOGIN_TIMEOUT", 60, int, minimum=1),
        network_timeout=_number("SNOWFLAKE_NETWORK_TIMEOUT", 600, int, minimum=1),
        # Whole seconds there: a fractional wait rounds up, never down to 0 (no wait).
        lock_timeout=math.ceil(run_lock_timeout_seconds()),
    )


# The activity API's largest page (its contract's MAX_LIMIT, which the simulator enforces too):
# a larger `limit` is answered 400, so a page size above it cannot work.
ACTIVITY_API_MAX_PAGE_SIZE = 1000


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
        page_size=_number("ACTIVITY_API_PAGE_SIZE", ACTIVITY_API_MAX_PAGE_SIZE, int, minimum=1,
                          maximum=ACTIVITY_API_MAX_PAGE_SIZE,
                          why="the API answers 400 to a limit outside 1..1000"),
        connect_timeout=_number("ACTIVITY_API_CONNECT_TIMEOUT", 5.0, minimum=0.1),
        read_timeout=_number("ACTIVITY_API_READ_TIMEOUT", 30.0, minimum=0.1),
        deadline_seconds=_number("ACTIVITY_API_DEADLINE_SECONDS", 900.0, minimum=1),
        max_pages=_number("ACTIVITY_API_MAX_PAGES", 100_000, int, minimum=1),
        backoff_base=_number("ACTIVITY_API_BACKOFF_BASE", 0.5, minimum=0),
        backoff_max=_number("ACTIVITY_API_BACKOFF_MAX", 60.0, minimum=0),
    )


LANDING_FORMS = "file:///absolute/path, file://localhost/absolute/path or s3://bucket/prefix"


def landing_url() -> str:
    """The landing zone's URL: LANDING_URL, else a folder in the data directory.

    Refuses a URL that cannot mean what its writer meant: an unknown scheme, a ``file://`` URL
    whose path is relative (``file://.data/landing`` reads as host ``.data`` and path
    ``/landing``: it would write to /landing) or on another host, an ``s3://`` URL without a
    bucket, a ``?`` or ``#`` (a URL parser takes them as query and fragment, cutting the
    path short), or a ``.`` or ``..`` segment, also percent-encoded (``%2e%2e``).
    """
    url = _get("LANDING_URL")
    if url is None:
        return (data_dir() / "landing").as_uri()
    parsed = urlsplit(url)
    scheme = parsed.scheme.lower()

    def refuse(why: str) -> ConfigError:
        return ConfigError(f"bad setting: LANDING_URL={url!r} {why}")

    if not scheme:
        raise refuse(f"is not a URL: use {LANDING_FORMS}"
                     f" (this folder is {_folder_uri(url)})")
    if scheme not in ("file", "s3"):
        raise refuse(f"has an unknown scheme {parsed.scheme!r}: use {LANDING_FORMS}")
    if "?" in url or "#" in url:
        raise refuse("has a '?' or '#', which would cut the path short: write them as %3F and %23")
    # After percent-decoding (as the zone reads it), a '..' would take the root elsewhere.
    if any(part in (".", "..") for part in unquote(parsed.path).split("/")):
        raise refuse("has a '.' or '..' segment (after percent-decoding): name the folder itself")
    if scheme == "s3":
        if not parsed.netloc:
            raise refuse("names no bucket: use s3://bucket/prefix")
        return url
    if parsed.netloc not in ("", "localhost"):
        # Most often a relative path written after file://, its first folder read as a host.
        relative = parsed.netloc + parsed.path
        raise refuse(f"names the host {parsed.netloc!r}: a file:// URL is a local absolute path,"
                     " file:///absolute/path or file://localhost/absolute/path; if you meant"
                     f" the relative path {relative!r}, from here it is {_folder_uri(relative)}")
    if not parsed.path.startswith("/"):
        raise refuse("is not an absolute path: use file:///absolute/path"
                     + (f" (from here {_folder_uri(parsed.path)})" if parsed.path else ""))
    return url


def _folder_uri(path: str) -> str:
    return Path(unquote(path)).expanduser().resolve().as_uri()


def sample_rows(value: object) -> int | None:
    """A trial run's ``sample_rows`` (pipeline variable or ``--sample-rows``): None when unset.

    Mage hands a pipeline variable over as it was typed (an int from YAML, text from the
    editor or an API trigger), so digits in text are accepted. Below 1 is refused: 0 would
    fetch nothing and, were it taken for "not sampled", move the watermark past the window.
    """
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, str) and re.fullmatch(r"\s*[+-]?\d+\s*", value):
        number = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        raise ConfigError(f"bad setting: sample_rows={value!r} is not a whole number: give the"
                          " number of events a trial run keeps, or leave it unset")
    if number < 1:
        raise ConfigError(f"bad setting: sample_rows={number} must be at least 1 (the number of"
                          " events a trial run keeps); leave it unset to fetch the whole window")
    return number


def landing_chunk_rows() -> int:
    return _number("LANDING_CHUNK_ROWS", 100_000, int, minimum=1)


def work_dir() -> Path:
    """Local scratch space for validated files between the transformer and the exporter."""
    path = Path(_get("WORK_DIR", str(data_dir() / "work"))).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def activity_lookback_hours() -> float:
    return _number("ACTIVITY_LOOKBACK_HOURS", 24.0, minimum=0)


# PostgreSQL's lock_timeout is a whole number of milliseconds up to 2^31 - 1.
_MAX_LOCK_TIMEOUT_SECONDS = (2**31 - 1) // 1000


def run_lock_timeout_seconds() -> float:
    """How long a run waits for another run's write lock; 0 means not at all."""
    value = _number("RUN_LOCK_TIMEOUT_SECONDS", 300.0, minimum=0,
                    maximum=_MAX_LOCK_TIMEOUT_SECONDS,
                    why="PostgreSQL's lock_timeout is at most 2147483 s")
    if 0 < value < 0.001:
        # Rounded to PostgreSQL's whole milliseconds it would be 0, which there means *wait
        # forever*: the opposite of a short wait.
        raise ConfigError(f"bad setting: RUN_LOCK_TIMEOUT_SECONDS={_get('RUN_LOCK_TIMEOUT_SECONDS')!r}"
                          " is below a"
                          " millisecond: use 0 (do not wait) or at least 0.001")
    return value


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
        port=_port("SMTP_PORT", 25),
        user=_get("SMTP_USER"),
        password=_get("SMTP_PASSWORD"),
        starttls=_flag("SMTP_STARTTLS", False),
        ssl=_flag("SMTP_SSL", False),
        mail_from=_get("ALERT_EMAIL_FROM", "mage-pipelines@localhost"),
        to=to,
    )


@dataclass(frozen=True)
class LineageSettings:
    """Where the OpenLineage events of every run go (README "Lineage"): a file per event under
    ``directory`` always, and to ``url`` (``POST {url}/api/v1/lineage``) when set."""

    enabled: bool
    directory: Path
    namespace: str  # the jobs' namespace: this deployment's name among the company's producers
    url: str | None
    api_key: str | None = field(repr=False)
    timeout_seconds: float
    retry_after_seconds: float  # after a failed delivery, how long runs only queue events


def lineage() -> LineageSettings:
    url = _get("OPENLINEAGE_URL")
    if url is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise ConfigError(f"bad setting: OPENLINEAGE_URL={url!r} is not an http(s) URL")
    return LineageSettings(
        enabled=not _flag("OPENLINEAGE_DISABLED", False),
        directory=_data_path() / "lineage",
        namespace=_get("OPENLINEAGE_NAMESPACE", "mage_project"),
        url=url.rstrip("/") if url else None,
        api_key=_get("OPENLINEAGE_API_KEY"),
        timeout_seconds=_number("OPENLINEAGE_TIMEOUT_SECONDS", 5.0, minimum=0.1, maximum=120),
        retry_after_seconds=_number("OPENLINEAGE_RETRY_AFTER_SECONDS", 60.0, minimum=0),
    )


def lineage_hub_api_key() -> str | None:
    """The key producers must present to the lineage hub (``Authorization: Bearer <key>``);
    None when unset or blank: the hub then takes any event (and says so when it binds beyond
    the loopback)."""
    return (_get("LINEAGE_HUB_API_KEY") or "").strip() or None
