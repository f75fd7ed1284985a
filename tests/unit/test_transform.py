"""dbt's profile, rendered as Mage's dbt blocks render it and as the project's runner does."""

from __future__ import annotations

import shlex

import pytest
import yaml

from mage_project import transform

ENV = {
    "WAREHOUSE": "postgres",
    "POSTGRES_HOST": "/var/run/postgresql",
    "POSTGRES_PORT": "6543",
    "POSTGRES_USER": "loader",
    "POSTGRES_PASSWORD": "a\"b'c {x}: #y \\ z",
    "POSTGRES_DBNAME": "warehouse",
}


@pytest.fixture
def mage_profiles(monkeypatch):
    """profiles.yml as Mage renders it before its dbt block runs dbt (the process environment)."""
    from mage_ai.data_preparation.models.block.dbt.profiles import Profiles

    def render(env: dict) -> dict:
        for name in [n for n in ("WAREHOUSE", "SNOWFLAKE_ROLE", "SNOWFLAKE_HOST") if n not in env]:
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        return Profiles(str(transform.DBT_PROJECT), {}).profiles

    return render


def test_the_runner_renders_the_profile_as_mage_does(mage_profiles):
    ours = yaml.safe_load(transform.render_profiles(ENV))
    assert ours == mage_profiles(ENV)
    postgres = ours["warehouse"]["outputs"]["postgres"]
    assert ours["warehouse"]["target"] == "postgres"
    assert (postgres["host"], postgres["port"], postgres["password"]) == (
        "/var/run/postgresql", 6543, ENV["POSTGRES_PASSWORD"])  # an int, and every character kept


def test_unset_optional_snowflake_settings_render_as_null_not_the_string_none(mage_profiles):
    env = {"WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "xy12345", "SNOWFLAKE_USER": "u",
           "SNOWFLAKE_PASSWORD": "p", "SNOWFLAKE_DATABASE": "d", "SNOWFLAKE_WAREHOUSE": "w"}
    ours = yaml.safe_load(transform.render_profiles(env))
    assert ours == mage_profiles(env)
    snowflake = ours["warehouse"]["outputs"]["snowflake"]
    assert ours["warehouse"]["target"] == "snowflake"
    assert (snowflake["role"], snowflake["host"], snowflake["port"], snowflake["protocol"]) == (
        None, None, 443, "https")


def test_the_audit_build_keeps_the_marts_whole_and_its_children_with_a_selection():
    assert transform.build_args() == ["--vars", '{"audit": true}']
    assert shlex.join(transform.build_args("stg_crm__customers")) == (
        "--vars '{\"audit\": true}' --select 'stg_crm__customers+ path:models/marts'")


def test_each_run_has_its_own_target_path(monkeypatch, tmp_path):
    monkeypatch.setenv("WORK_DIR", str(tmp_path))
    assert transform.run_target_path("mage-17") == tmp_path / "dbt-runs" / "mage-17"
    assert transform.run_target_path("../x y") == tmp_path / "dbt-runs" / "___x_y"
