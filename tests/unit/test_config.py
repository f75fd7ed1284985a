"""Settings: a value that cannot work is refused by name, before anything runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import _SETTINGS, ROOT, env_example_settings

from mage_project import config
from mage_project.sources.activity_simulator import MAX_LIMIT


@pytest.mark.parametrize(("value", "expected"), [
    (None, None), ("", None), ("  ", None),
    (1, 1), (25, 25), ("25", 25), (" 7 ", 7), ("+3", 3),
])
def test_sample_rows_accepts_a_whole_number_from_1_or_nothing(value, expected):
    assert config.sample_rows(value) == expected


@pytest.mark.parametrize("value", [0, "0", -1, "-5", " 0 "])
def test_sample_rows_below_1_is_refused(value):
    with pytest.raises(config.ConfigError, match=r"^bad setting: sample_rows=-?\d+ must be at least 1 "):
        config.sample_rows(value)


@pytest.mark.parametrize("value", [True, False, 2.5, 3.0, "2.5", "ten", "1e3", [5], {}])
def test_sample_rows_that_is_not_a_whole_number_is_refused(value):
    with pytest.raises(config.ConfigError, match=r"^bad setting: sample_rows=.* is not a whole number"):
        config.sample_rows(value)


def test_landing_url_defaults_to_a_folder_in_the_data_dir():
    assert config.landing_url() == (config.data_dir() / "landing").as_uri()
    assert config.landing_url().startswith("file:///")


@pytest.mark.parametrize("url", [
    "file:///srv/landing", "file://localhost/srv/landing", "file:///srv/my%20landing",
    "s3://bucket", "s3://bucket/some/prefix",
])
def test_landing_url_accepts_absolute_local_paths_and_buckets(url, monkeypatch):
    monkeypatch.setenv("LANDING_URL", url)
    assert config.landing_url() == url


@pytest.mark.parametrize(("url", "message"), [
    # Today's trap: read as host '.data' and path '/landing', it wrote to /landing.
    ("file://.data/landing", "names the host '.data': a file:// URL is a local absolute path"),
    ("file://fileserver/share/landing", "names the host 'fileserver'"),
    ("file://$PROJECT_DATA_DIR/landing", "names the host '$PROJECT_DATA_DIR'"),
    ("file:relative/landing", "is not an absolute path: use file:///absolute/path"),
    ("file://", "is not an absolute path"),
    ("file://localhost", "is not an absolute path"),
    ("http://example.com/landing", "has an unknown scheme 'http'"),
    ("gs://bucket/prefix", "has an unknown scheme 'gs'"),
    ("/srv/landing", "is not a URL: use file:///absolute/path"),
    ("s3://", "names no bucket: use s3://bucket/prefix"),
    ("s3:///prefix", "names no bucket"),
    ("file:///srv/landing#2", "has a '?' or '#'"),
    ("s3://bucket/prefix?x=1", "has a '?' or '#'"),
])
def test_landing_url_that_cannot_work_is_refused_naming_it(url, message, monkeypatch):
    monkeypatch.setenv("LANDING_URL", url)
    with pytest.raises(config.ConfigError) as refused:
        config.landing_url()
    assert str(refused.value).startswith(f"bad setting: LANDING_URL={url!r} ")
    assert message in str(refused.value)


def test_a_relative_file_url_is_answered_with_its_absolute_form(monkeypatch):
    monkeypatch.setenv("LANDING_URL", "file://.data/landing")
    with pytest.raises(config.ConfigError) as refused:
        config.landing_url()
    assert (Path.cwd() / ".data" / "landing").as_uri() in str(refused.value)


def api_settings(monkeypatch, **settings):
    monkeypatch.setenv("ACTIVITY_API_URL", "https://api.example.com")
    monkeypatch.setenv("ACTIVITY_API_TOKEN", "t0ken")
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return config.activity_api()


def test_the_page_size_limit_is_the_apis():
    assert config.ACTIVITY_API_MAX_PAGE_SIZE == MAX_LIMIT == 1000


@pytest.mark.parametrize(("value", "expected"), [("1", 1), ("250", 250), ("1000", 1000)])
def test_page_sizes_in_the_apis_range_are_taken(value, expected, monkeypatch):
    assert api_settings(monkeypatch, ACTIVITY_API_PAGE_SIZE=value).page_size == expected


def test_the_page_size_defaults_to_the_largest_page(monkeypatch):
    assert api_settings(monkeypatch).page_size == 1000


@pytest.mark.parametrize(("value", "message"), [
    ("0", "must be at least 1"), ("-10", "must be at least 1"),
    ("1001", "must be at most 1000 (the API answers 400"), ("5000", "must be at most 1000"),
    ("ten", "is not a whole number"), ("2.5", "is not a whole number"),
])
def test_page_sizes_outside_the_apis_range_are_refused(value, message, monkeypatch):
    expected = rf"^bad setting: ACTIVITY_API_PAGE_SIZE='{re.escape(value)}' {re.escape(message)}"
    with pytest.raises(config.ConfigError, match=expected):
        api_settings(monkeypatch, ACTIVITY_API_PAGE_SIZE=value)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("ACTIVITY_API_CONNECT_TIMEOUT", "0", "must be at least 0.1"),
    ("ACTIVITY_API_READ_TIMEOUT", "0", "must be at least 0.1"),
    ("ACTIVITY_API_READ_TIMEOUT", "nan", "is not a finite number"),
    ("ACTIVITY_API_DEADLINE_SECONDS", "inf", "is not a finite number"),
    ("ACTIVITY_API_DEADLINE_SECONDS", "0", "must be at least 1"),
    ("ACTIVITY_API_MAX_PAGES", "0", "must be at least 1"),
    ("ACTIVITY_API_BACKOFF_BASE", "-1", "must be at least 0"),
    ("ACTIVITY_API_BACKOFF_MAX", "NaN", "is not a finite number"),
])
def test_api_settings_that_cannot_work_are_refused(name, value, message, monkeypatch):
    with pytest.raises(config.ConfigError, match=rf"^bad setting: {name}='{value}' {message}"):
        api_settings(monkeypatch, **{name: value})


def test_a_deadline_shorter_than_a_read_timeout_is_allowed(monkeypatch):
    settings = api_settings(monkeypatch, ACTIVITY_API_READ_TIMEOUT="30",
                            ACTIVITY_API_DEADLINE_SECONDS="10")
    assert (settings.read_timeout, settings.deadline_seconds) == (30.0, 10.0)


@pytest.mark.parametrize("value", ["0", "65536", "-1", "http"])
def test_a_postgres_port_outside_1_to_65535_is_refused(value, monkeypatch):
    # With POSTGRES_HOST set, the settings resolve without connecting anywhere.
    monkeypatch.setenv("POSTGRES_HOST", "db.example.com")
    monkeypatch.setenv("POSTGRES_PORT", value)
    with pytest.raises(config.ConfigError, match=rf"^bad setting: POSTGRES_PORT='{value}' "):
        config.postgres()


def test_a_postgres_server_of_ones_own_resolves_without_connecting(monkeypatch):
    for name, value in {"POSTGRES_HOST": "db.example.com", "POSTGRES_PORT": "65535",
                        "POSTGRES_DBNAME": "warehouse", "POSTGRES_USER": "loader"}.items():
        monkeypatch.setenv(name, value)
    settings = config.postgres()
    assert (settings.host, settings.port, settings.embedded) == ("db.example.com", 65535, False)


def test_the_embedded_postgres_settings_resolve_without_starting_a_server():
    # Reading the settings starts nothing: the warehouse layer starts the server on connecting.
    settings = config.postgres()
    assert (settings.embedded, settings.dbname, settings.host, settings.port) == (
        True, "warehouse", None, None)
    assert settings.pgdata == config.data_dir() / "postgres"
    assert not settings.pgdata.exists()
    with pytest.raises(config.ConfigError, match="embedded PostgreSQL is not started yet"):
        settings.dsn_kwargs()


def test_config_imports_nothing_of_the_project():
    source = (ROOT / "mage_project" / "config.py").read_text()
    assert not re.search(r"^\s*(from|import) mage_project", source, re.MULTILINE)


def test_a_postgres_connect_timeout_of_0_is_refused(monkeypatch):
    # libpq reads 0 as "wait forever".
    monkeypatch.setenv("POSTGRES_CONNECT_TIMEOUT", "0")
    with pytest.raises(config.ConfigError,
                       match="^bad setting: POSTGRES_CONNECT_TIMEOUT='0' must be at least 1"):
        config.postgres()


def snowflake_settings(monkeypatch, **settings):
    for name, value in {"SNOWFLAKE_ACCOUNT": "xy12345", "SNOWFLAKE_USER": "loader",
                        "SNOWFLAKE_PASSWORD": "secret", "SNOWFLAKE_DATABASE": "ANALYTICS",
                        "SNOWFLAKE_WAREHOUSE": "TRANSFORMING", **settings}.items():
        monkeypatch.setenv(name, value)
    return config.snowflake()


def test_snowflake_port_is_optional_and_a_tcp_port(monkeypatch):
    assert snowflake_settings(monkeypatch).port is None
    assert snowflake_settings(monkeypatch, SNOWFLAKE_PORT="8443").port == 8443
    with pytest.raises(config.ConfigError, match="^bad setting: SNOWFLAKE_PORT='0' must be at least 1"):
        snowflake_settings(monkeypatch, SNOWFLAKE_PORT="0")
    with pytest.raises(config.ConfigError,
                       match="^bad setting: SNOWFLAKE_PORT='99999' must be at most 65535"):
        snowflake_settings(monkeypatch, SNOWFLAKE_PORT="99999")


@pytest.mark.parametrize(("timeout", "lock_timeout"), [("0", 0), ("0.5", 1), ("300", 300)])
def test_snowflakes_lock_timeout_never_rounds_a_wait_down_to_no_wait(timeout, lock_timeout, monkeypatch):
    settings = snowflake_settings(monkeypatch, RUN_LOCK_TIMEOUT_SECONDS=timeout)
    assert settings.connect_kwargs()["session_parameters"]["LOCK_TIMEOUT"] == lock_timeout


@pytest.mark.parametrize(("value", "expected"), [("0", 0.0), ("0.001", 0.001), ("300", 300.0),
                                                 ("2147483", 2147483.0)])
def test_run_lock_timeouts_postgres_can_express_are_taken(value, expected, monkeypatch):
    monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", value)
    assert config.run_lock_timeout_seconds() == expected


@pytest.mark.parametrize(("value", "message"), [
    ("-1", "must be at least 0"),
    ("0.0004", "is below a millisecond: use 0 (do not wait) or at least 0.001"),
    ("2147484", "must be at most 2147483"),
])
def test_run_lock_timeouts_postgres_cannot_express_are_refused(value, message, monkeypatch):
    monkeypatch.setenv("RUN_LOCK_TIMEOUT_SECONDS", value)
    expected = rf"^bad setting: RUN_LOCK_TIMEOUT_SECONDS=\S+ {re.escape(message)}"
    with pytest.raises(config.ConfigError, match=expected):
        config.run_lock_timeout_seconds()


@pytest.mark.parametrize(("name", "value", "resolve", "message"), [
    ("LANDING_CHUNK_ROWS", "0", config.landing_chunk_rows, "must be at least 1"),
    ("ACTIVITY_LOOKBACK_HOURS", "-1", config.activity_lookback_hours, "must be at least 0"),
    ("MARTS_BUILD_LEASE_SECONDS", "59", config.marts_build_lease_seconds, "must be at least 60"),
    ("SMTP_PORT", "0", config.smtp, "must be at least 1"),
    ("SMTP_PORT", "65536", config.smtp, "must be at most 65535 (a TCP port)"),
    ("SMTP_SSL", "maybe", config.smtp, "is not a boolean"),
])
def test_other_settings_that_cannot_work_are_refused(name, value, resolve, message, monkeypatch):
    monkeypatch.setenv(name, value)
    with pytest.raises(config.ConfigError, match=rf"^bad setting: {name}='{value}' {re.escape(message)}"):
        resolve()


# The suite's own environment: .env.example's settings are cleared for every test.

def test_env_example_settings_reads_both_forms_and_skips_prose():
    text = ("# Unset POSTGRES_HOST: an embedded PostgreSQL starts.\n"
            "# POSTGRES_HOST=db.example.com    # a hostname\n"
            "POSTGRES_PORT=5432\n"
            "#   SMTP_SSL=false\n"
            "# Both pipelines write to the warehouse WAREHOUSE names; x=1\n"
            "lower_case=1\n")
    assert env_example_settings(text) == ["POSTGRES_HOST", "POSTGRES_PORT", "SMTP_SSL"]


def test_every_setting_config_reads_is_in_env_example_and_cleared():
    source = Path(config.__file__).read_text()
    read = set(re.findall(r'(?:_get|require|_number|_flag|_port)\(\s*"([A-Z][A-Z0-9_]*)"', source))
    documented = set(env_example_settings((ROOT / ".env.example").read_text()))
    assert {"LANDING_URL", "ACTIVITY_API_PAGE_SIZE", "SMTP_SSL"} <= read  # the pattern finds them
    assert read - documented == set(), "settings config reads that .env.example does not list"
    assert documented - set(_SETTINGS) == set()


# What clean_environment sets itself, for every test.
_SET_BY_THE_SUITE = {"PROJECT_DATA_DIR", "ACTIVITY_API_BACKOFF_BASE", "ACTIVITY_API_BACKOFF_MAX"}


def test_no_setting_of_env_example_reaches_a_test():
    """Run by the next test with every setting exported; here it holds trivially."""
    leaked = {name: os.environ[name] for name in env_example_settings(
        (ROOT / ".env.example").read_text()) if name in os.environ and name not in _SET_BY_THE_SUITE}
    assert leaked == {}
    assert os.environ["ACTIVITY_API_BACKOFF_BASE"] == "0.01"
    assert "mage-project-data-" in os.environ["PROJECT_DATA_DIR"]


def test_a_developers_exported_settings_do_not_reach_the_tests(tmp_path):
    names = env_example_settings((ROOT / ".env.example").read_text())
    assert len(names) >= 50  # the whole file, not just its first section
    env = {**os.environ, **{name: "from-a-developers-dotenv" for name in names}}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         f"{__file__}::test_no_setting_of_env_example_reaches_a_test"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout
