"""The quality layer's pure parts: expectation declarations, results, JSON of samples."""

from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from mage_project import checks
from mage_project.entities import FILE_ENTITIES, Expectation
from mage_project.quality import QualityResult, dbt_test_results, identifier, jsonable, summary


@pytest.mark.parametrize("entity", list(FILE_ENTITIES.values()), ids=lambda e: e.table)
def test_every_expectation_names_a_column_of_what_it_checks(entity):
    names = [e.check_name for e in entity.expectations]
    assert len(names) == len(set(names)), "results are kept by check name"
    for expectation in entity.expectations:
        columns = {v for k, v in expectation.kwargs.items() if k in ("column", "column_A", "column_B")}
        allowed = set(entity.column_names) if expectation.scope == "rows" else {"_file_key", "rows"}
        assert columns and columns <= allowed, expectation.check_name
    assert {e.severity for e in entity.expectations} == {"error", "warn"}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"severity": "fatal"}, "severity 'fatal'"),
        ({"scope": "table"}, "scope 'table'"),
        ({"kwargs": {"column": "x", "mostly": 0.9}}, "'mostly' is not supported"),
    ],
)
def test_a_malformed_expectation_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Expectation("expect_column_values_to_not_be_null", **kwargs)


def test_check_names_are_the_expectation_and_its_columns_unless_named():
    assert Expectation("expect_column_values_to_not_be_null", {"column": "id"}).check_name == (
        "expect_column_values_to_not_be_null(id)")
    assert Expectation("expect_column_pair_values_a_to_be_greater_than_b",
                       {"column_A": "b", "column_B": "a"}).check_name == (
        "expect_column_pair_values_a_to_be_greater_than_b(b, a)")
    assert Expectation("expect_column_values_to_be_between", {"column": "rows"},
                       name="files_have_rows").check_name == "files_have_rows"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("200000.00"), "200000.00"),
        (pd.Timestamp("2026-11-01 10:00", tz="Europe/Berlin"), "2026-11-01T09:00:00+00:00"),
        (datetime(2026, 11, 1, 10, tzinfo=UTC), "2026-11-01T10:00:00+00:00"),
        (date(2026, 11, 1), "2026-11-01"),
        (np.datetime64("2026-10-01T00:00:00"), "2026-10-01T00:00:00"),
        (np.int64(3), 3),
        (np.float64(1.5), 1.5),
        (float("nan"), None),
        (pd.NaT, None),
        ({"a": [np.int64(1), None, True]}, {"a": [1, None, True]}),
    ],
)
def test_samples_become_json(value, expected):
    assert jsonable(value) == expected


def result(passed, severity="error"):
    return QualityResult("c", "great_expectations", "raw.t", severity, passed, {})


def test_only_a_failed_error_level_check_blocks():
    assert [result(p, s).blocking for p, s in
            [(False, "error"), (False, "warn"), (True, "error"), (None, "error")]] == [
        True, False, False, False]
    assert summary([result(False), result(False, "warn"), result(True)]) == {
        "checks": 3, "passed": 1, "failed_error": ["raw.t c"], "failed_warn": ["raw.t c"]}


def test_dbt_tests_become_results():
    tests = [
        {"name": "unique_x_id", "status": "pass", "failures": 0, "message": None,
         "severity": "error", "table": "marts.x", "relation": "marts__audit.x"},
        {"name": "not_null_x_id", "status": "fail", "failures": 3, "message": "Got 3 results",
         "severity": "error", "table": "marts.x", "relation": "marts__audit.x"},
        {"name": "accepted_values_y", "status": "warn", "failures": 1, "message": "Got 1 result",
         "severity": "warn", "table": "staging.y", "relation": "staging.y"},
        {"name": "unique_z_id", "status": "skipped", "failures": None, "message": None,
         "severity": "error", "table": "marts.z", "relation": "marts__audit.z"},
    ]
    assert [(r.check_name, r.check_kind, r.table_name, r.severity, r.passed, r.observed)
            for r in dbt_test_results(tests)] == [
        ("unique_x_id", "dbt_test", "marts.x", "error", True,
         {"status": "pass", "failures": 0, "relation": "marts__audit.x"}),
        ("not_null_x_id", "dbt_test", "marts.x", "error", False,
         {"status": "fail", "failures": 3, "relation": "marts__audit.x", "message": "Got 3 results"}),
        ("accepted_values_y", "dbt_test", "staging.y", "warn", False,
         {"status": "warn", "failures": 1, "relation": "staging.y", "message": "Got 1 result"}),
        ("unique_z_id", "dbt_test", "marts.z", "error", None,
         {"status": "skipped", "failures": None, "relation": "marts__audit.z"}),
    ]


@pytest.mark.parametrize("name", ['raw"; drop', "Raw", "raw.t", "", "1st"])
def test_only_plain_identifiers_reach_sql(name):
    with pytest.raises(ValueError, match="not a plain SQL identifier"):
        identifier(name)


def test_quality_checks_of_the_blocks():
    gate = {"checks": 22, "stored": 22, "failed_error": [], "failed_warn": ["raw.t c"]}
    assert checks.raw_quality_passed(gate).passed
    assert not checks.raw_quality_passed({**gate, "failed_error": ["raw.t d"]}).passed
    assert not checks.raw_quality_passed({**gate, "stored": 21}).passed
    assert checks.marts_published({"published": True}).passed
    assert not checks.marts_published({"published": False}).passed
