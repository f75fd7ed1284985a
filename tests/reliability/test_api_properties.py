"""Property: whatever the API sends, every record ends loaded or rejected with a reason.

Records are drawn from every JSON shape (non-objects, declared fields of every type, strings
with NUL, control characters and lone surrogates, integers past 64 bits, NaN and infinities,
undeclared fields) and go the real way: the landing zone's CSV writer, validation from the
landing copy, and (fewer examples) the load into the embedded PostgreSQL.
"""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mage_project.entities import USER_ACTIVITY
from mage_project.landing import LandingZone
from mage_project.validation import landing_header, landing_row, record_text, validate_file
from mage_project.windows import Window

WINDOW = Window(datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 2, tzinfo=UTC))

text = st.text(st.characters(codec=None, categories=None), max_size=12) | st.sampled_from(
    ["", " ", "\x00", "a\x00b", "\ud800", "\u2028", "\r\n", '"', ",", "é", "2026-11-01T10:00:00Z",
     "2026-11-01T10:00:00", "42", "19.99", '{"a":1}'])
numbers = (st.integers() | st.sampled_from([2**63, -(2**63) - 1, 2**70, 0])
           | st.floats(allow_nan=True, allow_infinity=True))
scalars = st.none() | st.booleans() | numbers | text
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(text, inner, max_size=3), max_leaves=6)
good_values = {
    "event_id": st.text(min_size=1, max_size=8), "user_id": st.integers(-(2**63), 2**63 - 1),
    "event_type": st.sampled_from(["click", "purchase"]),
    "occurred_at": st.datetimes(datetime(2026, 10, 31), datetime(2026, 11, 3),
                                timezones=st.just(UTC)).map(lambda d: d.isoformat()),
    "session_id": st.none() | text, "page_url": st.none() | text,
    "properties": st.none() | st.dictionaries(text, json_values, max_size=3),
    "amount": st.none() | numbers,
}
# A record: mostly plausible (each declared field right, wrong or absent), sometimes anything.
records = st.one_of(
    st.fixed_dictionaries({}, optional={
        name: strategy | json_values for name, strategy in good_values.items()
    }).flatmap(lambda r: st.dictionaries(text, json_values, max_size=2).map(lambda x: {**x, **r})),
    json_values,
)


def _land_and_validate(directory: Path, batch: list) -> tuple:
    zone = LandingZone(directory.as_uri())
    (landed,) = list(zone.write_parts(lambda n: f"k/part-{n}.csv", landing_header(USER_ACTIVITY),
                                      (landing_row(USER_ACTIVITY, r) for r in batch), 10**6))
    counts = validate_file(USER_ACTIVITY, zone.path(landed.key), landed.key, 0, "run", WINDOW,
                           directory)
    return landed, counts


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                    HealthCheck.function_scoped_fixture])
@given(st.lists(records, min_size=1, max_size=8))
def test_every_record_ends_valid_or_rejected_with_a_reason_and_its_json(tmp_path_factory, batch):
    directory = tmp_path_factory.mktemp("landing")
    landed, counts = _land_and_validate(directory, batch)
    assert landed.rows == counts.rows == len(batch)
    assert counts.valid + counts.rejected == len(batch)
    with open(counts.rejects_path, newline="") as f:
        rejects = list(csv.DictReader(f))
    with open(counts.valid_path, newline="") as f:
        valid = list(csv.DictReader(f))
    assert len(rejects) == counts.rejected and len(valid) == counts.valid
    assert all(r["reason"] for r in rejects)
    rejected_rows = {int(r["row_number"]) for r in rejects}
    for r in rejects:  # the JSON text as sent (a lone surrogate kept as its JSON escape)
        sent = record_text(batch[int(r["row_number"]) - 1])
        assert r["raw_payload"] == sent.encode("utf-8", "backslashreplace").decode()
    kept = [r for i, r in enumerate(batch, start=1) if i not in rejected_rows]
    assert [v["event_id"] for v in valid] == [r["event_id"] for r in kept]
    for row, record in zip(valid, kept, strict=True):
        assert int(row["user_id"]) == record["user_id"]
        assert WINDOW.start <= datetime.fromisoformat(row["occurred_at"]) < WINDOW.end
        if row["properties"]:
            assert json.loads(row["properties"]) == record["properties"]


@pytest.mark.integration
@settings(max_examples=15, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(records, min_size=1, max_size=12))
def test_any_batch_loads_into_postgresql_without_a_failed_copy(warehouse, tmp_path_factory, batch):
    from mage_project.warehouse import postgres

    directory = tmp_path_factory.mktemp("landing")
    _, counts = _land_and_validate(directory, batch)
    with postgres.connection("owner") as conn:
        postgres.migrate(conn)
        with postgres.transaction(conn) as cur:
            cur.execute("truncate raw.user_activity, raw.user_activity_rejects")
            staged = postgres.stage_files(cur, USER_ACTIVITY, [("k", Path(counts.valid_path))])
            distinct, _ = postgres.upsert_from_staging(cur, USER_ACTIVITY, "run",
                                                       [("k", Path(counts.valid_path))], staged)
            rejected, new = postgres.insert_rejects(cur, USER_ACTIVITY, [Path(counts.rejects_path)])
            cur.execute("select count(*) from raw.user_activity")
            assert cur.fetchone()[0] == distinct
            cur.execute("select count(*) from raw.user_activity_rejects")
            assert cur.fetchone()[0] == rejected == new
    assert staged == counts.valid and rejected <= counts.rejected
