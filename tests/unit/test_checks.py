"""The named checks blocks' @tests call: each one fails on an input that breaks its promise,
stating what it observed, and passes on one that keeps it."""

from __future__ import annotations

import json
import shlex

import pytest

from mage_project import checks
from mage_project.checks import CheckResult
from mage_project.landing import LandingZone


def test_require_raises_in_the_results_own_words_when_it_failed(capsys):
    failed = CheckResult("rows_match", False, observed=3, expected=4)
    with pytest.raises(AssertionError) as raised:
        checks.require(failed)
    assert str(raised.value) == "rows_match FAILED: observed 3, expected 4"
    assert capsys.readouterr().out == "rows_match FAILED: observed 3, expected 4\n"


def test_require_returns_a_passed_result_and_prints_it(capsys):
    passed = CheckResult("rows_match", True, observed=4, expected=4)
    assert checks.require(passed) is passed
    assert capsys.readouterr().out == "rows_match passed: observed 4, expected 4\n"


# landing_files_complete: against a real landing zone on disk.

@pytest.fixture
def zone(tmp_path):
    zone = LandingZone((tmp_path / "landing").as_uri())
    zone.write_bytes("events/date=2026-11-01/run-00000.csv", b"event_id\na\nb\n")
    zone.write_bytes("events/date=2026-11-02/run-00000.csv", b"event_id\nc\n")
    return zone


def landing_manifest(zone, files, rows_fetched):
    return {"landing_url": zone.url, "files": [{"key": k, "rows": n} for k, n in files],
            "rows_fetched": rows_fetched}


DAY1, DAY2 = "events/date=2026-11-01/run-00000.csv", "events/date=2026-11-02/run-00000.csv"


def test_landing_files_complete_passes_when_every_file_is_there_and_rows_add_up(zone):
    result = checks.landing_files_complete(landing_manifest(zone, [(DAY1, 2), (DAY2, 1)], 3))
    assert result.passed is True
    assert result.observed == {"missing": [], "rows_in_files": 3}


def test_landing_files_complete_fails_on_a_file_missing_from_the_zone(zone):
    lost = "events/date=2026-11-03/run-00000.csv"
    result = checks.landing_files_complete(landing_manifest(zone, [(DAY1, 2), (lost, 4)], 6))
    assert result.passed is False
    assert result.observed == {"missing": [lost], "rows_in_files": 6}


def test_landing_files_complete_fails_when_rows_do_not_add_up_to_what_was_fetched(zone):
    result = checks.landing_files_complete(landing_manifest(zone, [(DAY1, 2), (DAY2, 1)], 5))
    assert result.passed is False
    assert result.observed == {"missing": [], "rows_in_files": 3}
    assert result.expected == {"missing": [], "rows_in_files": 5}


def test_landing_files_complete_fails_when_an_empty_manifest_claims_rows(zone):
    result = checks.landing_files_complete(landing_manifest(zone, [], 10))
    assert (result.passed, result.observed) == (False, {"missing": [], "rows_in_files": 0})


# every_landed_row_validated

def validated(files, counts):
    return {"files": [{"key": k, "rows": n} for k, n in files],
            "validated": [{"key": k, "valid": v, "rejected": r} for k, v, r in counts]}


@pytest.mark.parametrize(("files", "counts", "observed"), [
    ([("a.csv", 10)], [("a.csv", 8, 1)], {"a.csv": 9}),                     # a row lost
    ([("a.csv", 10)], [("a.csv", 10, 1)], {"a.csv": 11}),                   # a row counted twice
    ([("a.csv", 10), ("b.csv", 5)], [("a.csv", 10, 0)], {"a.csv": 10}),     # a file never validated
    ([("a.csv", 10)], [("a.csv", 10, 0), ("z.csv", 1, 0)], {"a.csv": 10, "z.csv": 1}),  # not landed
])
def test_every_landed_row_validated_fails_when_rows_or_files_do_not_match(files, counts, observed):
    result = checks.every_landed_row_validated(validated(files, counts))
    assert result.passed is False
    assert result.observed == observed
    assert result.expected == dict(files)


def test_every_landed_row_validated_passes_when_each_file_ends_valid_or_rejected():
    result = checks.every_landed_row_validated(
        validated([("a.csv", 10), ("b.csv", 5)], [("a.csv", 7, 3), ("b.csv", 5, 0)]))
    assert (result.passed, result.observed) == (True, {"a.csv": 10, "b.csv": 5})


# load_reconciles

def load_summary(status="success", fetched=100, loaded=90, rejected=6, duplicate=4):
    return {"status": status, "rows_fetched": fetched, "rows_loaded": loaded,
            "rows_rejected": rejected, "rows_duplicate": duplicate}


def test_load_reconciles_passes_when_fetched_equals_loaded_rejected_and_duplicates():
    result = checks.load_reconciles(load_summary())
    assert (result.passed, result.observed) == (True, {"status": "success", "accounted": 100})


@pytest.mark.parametrize(("summary", "observed"), [
    (load_summary(loaded=89), {"status": "success", "accounted": 99}),       # a row lost
    (load_summary(rejected=7), {"status": "success", "accounted": 101}),     # a row twice
    (load_summary(status="failed"), {"status": "failed", "accounted": 100}),
    ({k: v for k, v in load_summary().items() if k != "status"}, {"status": None, "accounted": 100}),
])
def test_load_reconciles_fails_on_unaccounted_rows_or_a_run_that_did_not_succeed(summary, observed):
    result = checks.load_reconciles(summary)
    assert result.passed is False
    assert result.observed == observed


# file_loads_reconcile

def loaded(key, rows, rows_loaded, rows_rejected):
    return {"key": key, "status": "loaded", "rows": rows, "rows_loaded": rows_loaded,
            "rows_rejected": rows_rejected}


def test_file_loads_reconcile_passes_when_every_file_is_loaded_skipped_or_failed_and_rows_add_up():
    summary = {"files": [loaded("a.csv", 10, 9, 1), {"key": "b.csv", "status": "skipped"},
                         {"key": "c.csv", "status": "failed", "error": "the file is empty"},
                         {"key": "d.csv", "status": "error", "error": "No space left on device"}]}
    result = checks.file_loads_reconcile(summary)
    assert (result.passed, result.observed) == (True, {"unaccounted": []})


@pytest.mark.parametrize(("files", "unaccounted"), [
    ([loaded("a.csv", 10, 8, 1), loaded("b.csv", 3, 3, 0)], ["a.csv"]),     # a row lost
    ([loaded("a.csv", 10, 10, 1)], ["a.csv"]),                              # a row twice
    ([loaded("a.csv", 1, 1, 0), {"key": "b.csv", "status": "pending"}], ["b.csv"]),
])
def test_file_loads_reconcile_fails_naming_each_file_not_accounted_for(files, unaccounted):
    result = checks.file_loads_reconcile({"files": files})
    assert result.passed is False
    assert result.observed == {"unaccounted": unaccounted}


# dbt_build_passed

def test_dbt_build_passed_passes_when_models_built_and_every_test_passed():
    result = checks.dbt_build_passed({"models": 12, "statuses": {"success": 12, "pass": 30}})
    assert (result.passed, result.observed) == (True, {"models": 12, "not_passed": {}})


def test_dbt_build_passed_passes_when_nothing_needed_building():
    result = checks.dbt_build_passed({"models": 0, "statuses": {}, "up_to_date": True})
    assert result.passed is True


@pytest.mark.parametrize(("summary", "observed"), [
    ({"models": 12, "statuses": {"success": 11, "error": 1, "pass": 30}},
     {"models": 12, "not_passed": {"error": 1}}),
    ({"models": 12, "statuses": {"success": 12, "pass": 29, "fail": 1}},
     {"models": 12, "not_passed": {"fail": 1}}),
    ({"models": 12, "statuses": {"success": 12, "skipped": 2}},
     {"models": 12, "not_passed": {"skipped": 2}}),
    ({"models": 0, "statuses": {}}, {"models": 0, "not_passed": {}}),        # built nothing
    ({"models": 0, "statuses": {}, "up_to_date": False}, {"models": 0, "not_passed": {}}),
])
def test_dbt_build_passed_fails_on_any_other_status_or_an_empty_build(summary, observed):
    result = checks.dbt_build_passed(summary)
    assert result.passed is False
    assert result.observed == observed


# raw_quality_passed

def test_raw_quality_passed_passes_with_no_error_level_failure_and_every_result_stored():
    result = checks.raw_quality_passed({"failed_error": [], "stored": 14, "checks": 14})
    assert (result.passed, result.observed) == (True, {"failed_error": [], "stored": 14})


@pytest.mark.parametrize(("summary", "observed"), [
    ({"failed_error": ["raw.billing__payments amount between"], "stored": 14, "checks": 14},
     {"failed_error": ["raw.billing__payments amount between"], "stored": 14}),
    ({"failed_error": [], "stored": 13, "checks": 14}, {"failed_error": [], "stored": 13}),
])
def test_raw_quality_passed_fails_on_an_error_level_failure_or_a_result_not_stored(summary, observed):
    result = checks.raw_quality_passed(summary)
    assert result.passed is False
    assert result.observed == observed
    assert result.expected == {"failed_error": [], "stored": 14}


# marts_build_planned

TARGET = "/data/dbt/target/run-1"


def plan(*, up_to_date=False, audit=True, target=TARGET):
    args = ["build", "--select", "marts+"]
    if audit is not None:
        args += ["--vars", json.dumps({"audit": audit, "run_id": "run-1"})]
    if target is not None:
        args += ["--target-path", target]
    return {"dbt_args": shlex.join(args), "target_path": TARGET, "up_to_date": up_to_date}


def test_marts_build_planned_passes_for_an_audit_build_into_the_runs_own_target_path():
    result = checks.marts_build_planned(plan())
    assert result.passed is True
    assert result.observed == {"up_to_date": False, "audit": True, "own_target_path": True}


def test_marts_build_planned_passes_when_up_to_date():
    result = checks.marts_build_planned(plan(up_to_date=True, audit=None, target=None))
    assert result.passed is True
    assert result.observed == {"up_to_date": True, "audit": False, "own_target_path": False}


@pytest.mark.parametrize(("kwargs", "observed"), [
    ({"audit": None}, {"up_to_date": False, "audit": False, "own_target_path": True}),
    ({"audit": False}, {"up_to_date": False, "audit": False, "own_target_path": True}),
    ({"target": None}, {"up_to_date": False, "audit": True, "own_target_path": False}),
    ({"target": "/data/dbt/target"}, {"up_to_date": False, "audit": True, "own_target_path": False}),
])
def test_marts_build_planned_fails_without_audit_or_the_runs_own_target_path(kwargs, observed):
    result = checks.marts_build_planned(plan(**kwargs))
    assert result.passed is False
    assert result.observed == observed


# marts_published

@pytest.mark.parametrize("summary", [{"published": True}, {"published": False, "up_to_date": True}])
def test_marts_published_passes_when_swapped_in_or_up_to_date(summary):
    assert checks.marts_published(summary).passed is True


@pytest.mark.parametrize(("summary", "observed"), [
    ({"published": False, "up_to_date": False}, {"published": False, "up_to_date": False}),
    ({}, {"published": None, "up_to_date": None}),
    ({"published": "yes"}, {"published": "yes", "up_to_date": None}),      # not True
])
def test_marts_published_fails_when_neither_published_nor_up_to_date(summary, observed):
    result = checks.marts_published(summary)
    assert result.passed is False
    assert result.observed == observed
