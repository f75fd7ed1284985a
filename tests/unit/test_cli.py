"""The command-line runner's pure parts, and its refusals: a setting that cannot work exits 2
naming it, before any service starts."""

import json
import re
from pathlib import Path

import pytest
from conftest import run_cli

from mage_project import cli, config, contracts
from mage_project.runner import dependency_order

ROOT = Path(__file__).resolve().parents[2]


def test_blocks_run_in_dependency_order():
    assert dependency_order({"load": ["validate"], "validate": ["fetch"], "fetch": []}) == [
        "fetch", "validate", "load"]
    with pytest.raises(ValueError, match="cycle"):
        dependency_order({"a": ["b"], "b": ["a"]})


API = {"ACTIVITY_API_URL": "https://api.example.com", "ACTIVITY_API_TOKEN": "t0ken"}


@pytest.mark.parametrize(("pipeline", "args", "settings", "message"), [
    ("user_activity_ingest", ["--sample-rows", "0"], API,
     "bad setting: sample_rows=0 must be at least 1"),
    ("user_activity_ingest", ["--sample-rows", "-1"], API,
     "bad setting: sample_rows=-1 must be at least 1"),
    ("user_activity_ingest", ["--sample-rows", "ten"], API,
     "bad setting: sample_rows='ten' is not a whole number"),
    ("user_activity_ingest", [], {**API, "ACTIVITY_API_PAGE_SIZE": "1001"},
     "bad setting: ACTIVITY_API_PAGE_SIZE='1001' must be at most 1000"),
    ("user_activity_ingest", [], {**API, "ACTIVITY_API_PAGE_SIZE": "0"},
     "bad setting: ACTIVITY_API_PAGE_SIZE='0' must be at least 1"),
    ("user_activity_ingest", [], {**API, "ACTIVITY_API_READ_TIMEOUT": "0"},
     "bad setting: ACTIVITY_API_READ_TIMEOUT='0' must be at least 0.1"),
    ("user_activity_ingest", [], {**API, "LANDING_CHUNK_ROWS": "0"},
     "bad setting: LANDING_CHUNK_ROWS='0' must be at least 1"),
    ("user_activity_ingest", [], {**API, "ACTIVITY_LOOKBACK_HOURS": "-2"},
     "bad setting: ACTIVITY_LOOKBACK_HOURS='-2' must be at least 0"),
    ("user_activity_ingest", [], {**API, "LANDING_URL": "file://.data/landing"},
     "bad setting: LANDING_URL='file://.data/landing' names the host '.data'"),
    ("user_activity_ingest", [], {}, "missing setting: environment variable ACTIVITY_API_URL"),
    ("warehouse_elt", [], {"LANDING_URL": "file://.data/landing"},
     "bad setting: LANDING_URL='file://.data/landing' names the host '.data'"),
    ("warehouse_elt", [], {"LANDING_URL": "ftp://files.example.com/landing"},
     "bad setting: LANDING_URL='ftp://files.example.com/landing' has an unknown scheme 'ftp'"),
    ("warehouse_elt", [], {"LANDING_URL": "s3:///landing"},
     "bad setting: LANDING_URL='s3:///landing' names no bucket"),
    ("warehouse_elt", [], {"LANDING_URL": "file:///srv/landing/%2e%2e/%2E%2E/etc"},
     "bad setting: LANDING_URL='file:///srv/landing/%2e%2e/%2E%2E/etc' has a '.' or '..' segment"
     " (after percent-decoding)"),
    ("warehouse_elt", [], {"LANDING_URL": "s3://bucket/drops/../other"},
     "bad setting: LANDING_URL='s3://bucket/drops/../other' has a '.' or '..' segment"),
    ("warehouse_elt", [], {"MARTS_BUILD_LEASE_SECONDS": "30"},
     "bad setting: MARTS_BUILD_LEASE_SECONDS='30' must be at least 60"),
    ("warehouse_elt", [], {"RUN_LOCK_TIMEOUT_SECONDS": "-1"},
     "bad setting: RUN_LOCK_TIMEOUT_SECONDS='-1' must be at least 0"),
    ("warehouse_elt", [], {"SMTP_PORT": "70000"},
     "bad setting: SMTP_PORT='70000' must be at most 65535"),
    ("warehouse_elt", [], {"SMTP_HOST": "smtp.example.com"},
     "missing setting: SMTP_HOST is set but ALERT_EMAIL_TO is not"),
    ("warehouse_elt", [], {"WAREHOUSE": "oracle"},
     "bad setting: WAREHOUSE='oracle' is not one of postgres, snowflake"),
    ("warehouse_elt", [], {"POSTGRES_HOST": "db.example.com", "POSTGRES_PORT": "0"},
     "bad setting: POSTGRES_PORT='0' must be at least 1"),
    ("warehouse_elt", [], {"WAREHOUSE": "snowflake", "SNOWFLAKE_ACCOUNT": "xy12345",
                           "SNOWFLAKE_USER": "loader", "SNOWFLAKE_PASSWORD": "secret",
                           "SNOWFLAKE_DATABASE": "ANALYTICS", "SNOWFLAKE_WAREHOUSE": "COMPUTE",
                           "SNOWFLAKE_PORT": "65536"},
     "bad setting: SNOWFLAKE_PORT='65536' must be at most 65535"),
])
def test_a_setting_that_cannot_work_exits_2_naming_it_and_nothing_runs(
        pipeline, args, settings, message, monkeypatch, capsys):
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    assert cli.main(["run", pipeline, *args]) == cli.EXIT_BAD_SETTINGS == 2
    out, err = capsys.readouterr()
    assert err.startswith(f"error: {message}"), err
    assert "succeeded" not in out + err and "failed:" not in err
    # Nothing ran: not even the embedded PostgreSQL was started.
    assert not (config.data_dir() / "postgres").exists()


def test_sample_rows_0_exits_2_from_the_command_line():
    result = run_cli("run", "user_activity_ingest", "--sample-rows", "0",
                     env={"ACTIVITY_API_URL": "http://127.0.0.1:9", "ACTIVITY_API_TOKEN": "t"})
    assert result.returncode == 2, result.stderr[-3000:]
    assert result.stderr.startswith("error: bad setting: sample_rows=0 must be at least 1 "), \
        result.stderr
    assert result.stdout == ""


def test_bad_arguments_exit_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "no_such_pipeline"])
    assert exited.value.code == 2
    assert cli.main(["run", "warehouse_elt", "--start", "2026-11-01", "--end", "2026-11-02"]) == 2
    assert cli.main(["run", "user_activity_ingest", "--start", "2026-11-02"]) == 2
    err = capsys.readouterr().err
    assert "error: warehouse_elt loads whatever files are new: no --start/--end" in err
    assert "error: give both --start and --end, or neither" in err


def test_help_documents_every_exit_status(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(["run", "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    for status, meaning in [(0, "the run succeeded"),
                            (1, "the run failed: recorded in ops.pipeline_runs, its alert sent"),
                            (2, "bad arguments or settings"),
                            (3, "the run completed but some input files failed")]:
        assert f"  {status}  {meaning}" in text, text
    assert "nothing ran" in text
    assert (cli.EXIT_SUCCEEDED, cli.EXIT_FAILED, cli.EXIT_BAD_SETTINGS, cli.EXIT_FILES_FAILED) == (0, 1, 2, 3)


def test_products_lists_every_product_from_its_contract(capsys):
    assert cli.main(["products", "--json"]) == cli.EXIT_SUCCEEDED
    products = {f"{p['domain']}/{p['product']}": p for p in json.loads(capsys.readouterr().out)}
    assert sorted(products) == sorted(f"{p.domain}/{p.product}" for p in contracts.load_products())
    assert {"finance/revenue", "marketing/campaign_performance", "platform/file_drops",
            "product/user_activity"} <= set(products)
    revenue = products["finance/revenue"]
    assert (revenue["owner_email"], revenue["tables"], revenue["pipelines"]) == (
        "finance-data@example.com", ["marts.fct_daily_revenue", "marts.dim_customers"],
        ["warehouse_elt"])
    assert cli.main(["products"]) == cli.EXIT_SUCCEEDED
    text = capsys.readouterr().out
    assert "PagerDuty key in $PAGERDUTY_ROUTING_KEY_FINANCE" in text


def test_check_on_the_project_finds_nothing_and_exits_0():
    result = run_cli("check")
    assert (result.returncode, result.stdout) == (0, ""), result.stdout + result.stderr[-3000:]
    assert result.stderr == "check: 0 error(s), 0 warning(s), 16 rules\n"


def test_check_with_a_base_that_is_no_commit_exits_1_naming_it(capsys):
    assert cli.main(["check", "--json", "--base", "no-such-ref"]) == 1
    out, err = capsys.readouterr()
    assert json.loads(out) == [{
        "rule": "DP014", "severity": "error", "path": "contracts", "line": None,
        "message": "git base 'no-such-ref' is not a commit of this repository: make the change "
                   "additive, or raise the contract's major version"}]
    assert err == "check: 1 error(s), 0 warning(s), 16 rules\n"


def test_check_format_github_prints_annotations_and_json_excludes_it(capsys):
    assert cli.main(["check", "--format", "github", "--base", "no-such-ref"]) == 1
    out, err = capsys.readouterr()
    assert out == ("::error file=contracts,title=DP014::git base 'no-such-ref' is not a commit of this"
                   " repository: make the change additive, or raise the contract's major version\n")
    assert err == "check: 1 error(s), 0 warning(s), 16 rules\n"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["check", "--json", "--format", "gitlab"])
    assert exit_.value.code == cli.EXIT_BAD_SETTINGS
    assert "not allowed with argument" in capsys.readouterr().err


def test_make_check_and_make_test_run_the_check_first():
    makefile = (ROOT / "Makefile").read_text()
    recipe = {target: re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)[1].splitlines()
              for target in ("check", "test")}
    assert recipe["check"] == ["\t$(BIN)/python -m mage_project check"]
    assert recipe["test"][0] == "\t$(BIN)/python -m mage_project check"
    assert recipe["test"][1].startswith("\t$(BIN)/python -m pytest ")


def test_new_product_refuses_a_product_that_exists_exit_2_naming_its_files(capsys):
    before = sorted(p for p in (ROOT / "contracts").rglob("*") if p.is_file())
    assert cli.main(["new-product", "product", "user_activity"]) == cli.EXIT_BAD_SETTINGS
    assert capsys.readouterr().err == (
        "error: user_activity is taken: contracts/product/user_activity.yaml already exist(s); "
        "nothing was written\n")
    assert sorted(p for p in (ROOT / "contracts").rglob("*") if p.is_file()) == before
