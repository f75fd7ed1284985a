"""No file drop can poison warehouse_elt: whatever a file holds, its rows end loaded or rejected
with a reason, and whatever fails while loading one file, the others load.

Each case through the real loader into the suite's PostgreSQL, faults injected for real: bytes
PostgreSQL refuses, a 10 MB field, a full work disk (a small tmpfs), a work directory that cannot
be created, a connection cut mid-COPY and a warehouse gone while the failure is being recorded
(``pg_proxy`` of this directory's conftest).
"""

from __future__ import annotations

import subprocess
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import query
from support import free_port

from mage_project import normalize
from mage_project.landing import LandingZone
from mage_project.pipelines.file_drops import FileLoadsNotRecorded, load_new_files, pending_drops

from .conftest import COPY_FROM_STDIN, Query

pytestmark = pytest.mark.integration

HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
TS = "2026-11-01T10:00:00Z"
CUSTOMERS = "crm/customers/2026-11-01/export.csv"
LATER = "crm/customers/2026-11-02/export.csv"
SPEND = "marketing/ad_spend/2026-11-01/spend.csv"
SPEND_FILE = (b"date,campaign,channel,spend,impressions,clicks\n"
              b"2026-11-01,black_friday,google,120.50,10000,250\n")
PAYMENTS = "billing/payments/2026-11-01/p.csv"


def row(customer_id: int, full_name: str = "Ann", country: str = "US") -> str:
    from mage_project.landing import csv_line

    return csv_line([str(customer_id), "ann@example.com", full_name, country, TS, None, TS])


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    return LandingZone(url)


def loaded(conn, key=None):
    return query(conn, "select customer_id, full_name, _row_number from raw.crm__customers"
                       " where %s is null or _file_key = %s order by _file_key, _row_number",
                 (key, key))


def rejects(conn):
    return query(conn, "select file_key, row_number, reason, raw_line from raw.load_rejects"
                       " order by file_key, row_number")


def manifest(conn):
    return query(conn, "select file_key, version, status, rows_total, rows_loaded, rows_rejected,"
                       " run_id from ops.file_manifest order by file_key, version")


# --- bytes PostgreSQL refuses, and bytes it keeps -------------------------------------------


def test_a_nul_byte_is_a_reject_and_no_later_file_is_blocked(warehouse, zone):
    bad = row(2, "Bo\x00b")
    zone.write_bytes(CUSTOMERS, (HEADER + row(1) + bad).encode())
    first = load_new_files(run_id="run-1")
    assert (first["loaded"], first["failed"], first["error"]) == (1, 0, 0)
    assert rejects(warehouse) == [(CUSTOMERS, 2, "full_name contains a NUL character",
                                   bad.rstrip("\n").replace("\x00", "\\x00"))]
    # The next drop loads: nothing is stuck on the first file.
    zone.write_bytes(LATER, (HEADER + row(3)).encode())
    assert load_new_files(run_id="run-2")["loaded"] == 1
    assert [r[0] for r in loaded(warehouse)] == [1, 3]
    assert manifest(warehouse) == [(CUSTOMERS, 1, "loaded", 2, 1, 1, "run-1"),
                                   (LATER, 1, "loaded", 1, 1, 0, "run-2")]
    assert pending_drops() == []


def test_control_characters_survive_copy_as_text_in_rows_and_rejects(warehouse, zone):
    # Every control character but NUL, a quoted line break, and PostgreSQL's end-of-data marker
    # alone on a line of a quoted value.
    name = "".join(chr(c) for c in range(1, 32)) + "\x7f|\r\n\\.\n|\u2028|end"
    zone.write_bytes(CUSTOMERS, (HEADER + row(1, name) + row(2, name, "usa")).encode())
    assert load_new_files()["loaded"] == 1
    assert loaded(warehouse) == [(1, name, 1)]
    ((_, number, reason, raw),) = rejects(warehouse)
    assert (number, reason) == (2, "country is not an ISO 3166 alpha-2 code: 'usa'")
    assert raw == row(2, name, "usa").rstrip("\n")


def test_a_row_that_is_not_utf8_is_a_reject_and_the_rest_of_the_file_loads(warehouse, zone):
    data = (HEADER + row(1, "Zoë") + row(2, "Ren\xe9e") + row(3)).encode("latin-1")
    data = data.replace("Zo\xeb".encode("latin-1"), "Zoë".encode())  # row 1 is UTF-8
    zone.write_bytes(CUSTOMERS, data)
    assert load_new_files()["loaded"] == 1
    assert loaded(warehouse) == [(1, "Zoë", 1), (3, "Ann", 3)]
    assert rejects(warehouse) == [
        (CUSTOMERS, 2, "full_name is not UTF-8: b'Ren\\xe9e'",
         "2,ann@example.com,Ren\\xe9e,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z")]


def test_a_10_mb_field_rejects_its_row_and_the_other_rows_load(warehouse, zone):
    huge = row(2, "x" * 10_000_000)
    zone.write_bytes(CUSTOMERS, (HEADER + row(1) + huge + row(3)).encode())
    assert load_new_files(run_id="run-big")["loaded"] == 1
    assert [r[0] for r in loaded(warehouse)] == [1, 3]
    ((_, number, reason, raw),) = rejects(warehouse)
    assert (number, reason) == (2, "full_name is 10000000 bytes, over the 1048576-byte limit of"
                                   " a field")
    assert raw == (f"{huge[:normalize.RAW_LINE_CHARS]} [... truncated: the row is {len(huge)}"
                   " bytes]")
    assert manifest(warehouse) == [(CUSTOMERS, 1, "loaded", 3, 2, 1, "run-big")]


# --- failures of ours: recorded 'error', pending again, loaded by the next run ----------------


@pytest.fixture
def small_work_disk(monkeypatch):
    """A tmpfs of 128 kB as WORK_DIR (root and mount(8) needed, else skipped); yields a function
    that grows it to the given kilobytes, as an operator freeing space would."""
    path = Path(tempfile.mkdtemp(prefix="mage-project-work-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        path.rmdir()
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}): a full disk needs root")
    monkeypatch.setenv("WORK_DIR", str(path))

    def grow(size_kb: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kb}k", str(path)], check=True)

    grow.path = path
    yield grow
    subprocess.run(["umount", "-l", str(path)], check=False)
    path.rmdir()


def test_a_full_work_disk_is_an_error_that_the_next_run_retries(warehouse, zone, small_work_disk):
    # Its valid rows (about 90 bytes each) do not fit in 128 kB; the small file's do.
    zone.write_bytes(CUSTOMERS, (HEADER + "".join(row(i) for i in range(1, 3001))).encode())
    zone.write_bytes(SPEND, SPEND_FILE)
    first = load_new_files(run_id="run-full")
    assert (first["loaded"], first["error"]) == (1, 1)
    (error,) = first["not_loaded"]
    assert error["key"] == CUSTOMERS and error["status"] == "error"
    assert error["error"].startswith("OSError: [Errno 28] No space left on device")
    assert loaded(warehouse) == [] and rejects(warehouse) == []
    assert [f.key for f in pending_drops()] == [CUSTOMERS]
    assert [p for p in small_work_disk.path.rglob("*") if p.is_file()] == []  # nothing left
    small_work_disk(4096)
    second = load_new_files(run_id="run-grown")
    assert second["loaded"] == 1 and second["not_loaded"] == []
    assert len(loaded(warehouse)) == 3000
    assert [m for m in manifest(warehouse) if m[0] == CUSTOMERS] == [
        (CUSTOMERS, 1, "error", None, None, None, "run-full"),
        (CUSTOMERS, 2, "loaded", 3000, 3000, 0, "run-grown")]
    assert pending_drops() == []


def test_a_work_dir_that_cannot_be_made_is_an_error_not_the_files_fault(warehouse, zone,
                                                                          tmp_path, monkeypatch):
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the work directory should be")
    monkeypatch.setenv("WORK_DIR", str(blocked / "work"))
    zone.write_bytes(CUSTOMERS, (HEADER + row(1)).encode())
    zone.write_bytes(SPEND, SPEND_FILE)
    first = load_new_files(run_id="run-blocked")
    assert (first["loaded"], first["failed"], first["error"]) == (0, 0, 2)
    assert {f["error"].split(":")[0] for f in first["not_loaded"]} == {"NotADirectoryError"}
    assert sorted(f.key for f in pending_drops()) == [CUSTOMERS, SPEND]
    monkeypatch.delenv("WORK_DIR")
    second = load_new_files(run_id="run-fixed")
    assert second["loaded"] == 2
    assert manifest(warehouse) == [
        (CUSTOMERS, 1, "error", None, None, None, "run-blocked"),
        (CUSTOMERS, 2, "loaded", 1, 1, 0, "run-fixed"),
        (SPEND, 1, "error", None, None, None, "run-blocked"),
        (SPEND, 2, "loaded", 1, 1, 0, "run-fixed")]


def test_an_errored_retry_of_unchanged_content_is_skipped_and_seen(warehouse, zone, tmp_path,
                                                                   monkeypatch):
    zone.write_bytes(CUSTOMERS, (HEADER + row(1)).encode())
    load_new_files(run_id="run-1")
    zone.write_bytes(CUSTOMERS, (HEADER + row(1)).encode())  # delivered again, same bytes
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("")
    monkeypatch.setenv("WORK_DIR", str(blocked))
    assert load_new_files(run_id="run-2")["error"] == 1
    monkeypatch.delenv("WORK_DIR")
    assert [f.key for f in pending_drops()] == [CUSTOMERS]
    third = load_new_files(run_id="run-3")
    assert [(f["status"], f["version"]) for f in third["files"]] == [("skipped", 1)]
    assert pending_drops() == []
    assert len(loaded(warehouse)) == 1
    assert manifest(warehouse) == [(CUSTOMERS, 1, "loaded", 1, 1, 0, "run-1"),
                                   (CUSTOMERS, 2, "error", None, None, None, "run-2")]


def test_a_connection_cut_mid_copy_is_an_error_beside_a_failed_and_a_loaded_file(
        warehouse, zone, pg_proxy):
    proxy = pg_proxy()
    zone.write_bytes(PAYMENTS, b"payment_id,amount\np1,5.00\n")  # the file's fault: failed
    zone.write_bytes(CUSTOMERS, (HEADER + row(1) + row(2)).encode())  # cut: error
    zone.write_bytes(SPEND, SPEND_FILE)  # loaded
    cut = proxy.arm(Query(COPY_FROM_STDIN, "cut"))
    first = load_new_files(run_id="run-cut")
    assert cut.fired.is_set()
    assert [(f["key"], f["status"]) for f in first["files"]] == [
        (PAYMENTS, "failed"), (CUSTOMERS, "error"), (SPEND, "loaded")]
    assert loaded(warehouse) == []
    assert query(warehouse, "select file_key, status, run_id from ops.file_manifest"
                            " order by file_key") == [
        (PAYMENTS, "failed", "run-cut"), (CUSTOMERS, "error", "run-cut"),
        (SPEND, "loaded", "run-cut")]
    # The failed file waits for a rewrite; the errored one is loaded by the next run.
    assert [f.key for f in pending_drops()] == [CUSTOMERS]
    second = load_new_files(run_id="run-next")
    assert [(f["key"], f["status"], f["version"]) for f in second["files"]] == [
        (CUSTOMERS, "loaded", 2)]
    assert [r[0] for r in loaded(warehouse)] == [1, 2]
    assert pending_drops() == []


def test_when_the_warehouse_goes_the_other_files_are_tried_and_the_run_names_them(
        warehouse, zone, pg_proxy, monkeypatch):
    import os

    direct = (os.environ["POSTGRES_HOST"], os.environ["POSTGRES_PORT"])
    proxy = pg_proxy()
    zone.write_bytes(CUSTOMERS, (HEADER + row(1)).encode())
    zone.write_bytes(SPEND, SPEND_FILE)
    held = proxy.arm(Query(COPY_FROM_STDIN, "hold"))
    outcome: dict = {}

    def run():
        try:
            outcome["summary"] = load_new_files(run_id="run-down")
        except Exception as exc:  # noqa: BLE001 - what the run raised is the test's subject
            outcome["raised"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    held.wait(timeout=60)
    # The warehouse is gone: mid-COPY, and for every connection after (at an address where
    # nothing listens, since a proxy closed may still accept the one connection in flight).
    monkeypatch.setenv("POSTGRES_HOST", "127.0.0.1")
    monkeypatch.setenv("POSTGRES_PORT", str(free_port()))
    proxy.close()
    thread.join(timeout=120)
    assert not thread.is_alive()
    raised = outcome.get("raised")
    assert isinstance(raised, FileLoadsNotRecorded), outcome
    assert f"{CUSTOMERS} (error: " in str(raised) and f"{SPEND} (error: " in str(raised)
    assert f"[{CUSTOMERS!r}, {SPEND!r}]" in str(raised)
    monkeypatch.setenv("POSTGRES_HOST", direct[0])
    monkeypatch.setenv("POSTGRES_PORT", direct[1])
    assert manifest(warehouse) == []  # nothing was recorded, nothing half-loaded
    again = load_new_files(run_id="run-up")
    assert again["loaded"] == 2
    assert [m[:3] for m in manifest(warehouse)] == [(CUSTOMERS, 1, "loaded"), (SPEND, 1, "loaded")]


def test_poison_rows_load_as_rejects_on_snowflake_too(snowflake_warehouse, zone):
    name = "".join(chr(c) for c in range(1, 32)) + "\x7f|\r\n|end"
    data = (HEADER + row(1, name) + row(2, "Bo\x00b")).encode() + row(3, "Ren\xe9e").encode(
        "latin-1") + row(4, name, "usa").encode() + row(5, "x" * 2_000_000).encode()
    zone.write_bytes(CUSTOMERS, data)
    summary = load_new_files(run_id="run-snowflake")
    assert (summary["loaded"], summary["error"]) == (1, 0), summary
    cur = snowflake_warehouse.cursor()
    assert cur.execute("select customer_id, full_name from raw.crm__customers").fetchall() == [
        (1, name)]
    assert cur.execute("select row_number, reason, raw_line from raw.load_rejects"
                       " order by row_number").fetchall() == [
        (2, "full_name contains a NUL character", row(2, "Bo\\x00b").rstrip("\n")),
        (3, "full_name is not UTF-8: b'Ren\\xe9e'", row(3, "Ren\\xe9e").rstrip("\n")),
        (4, "country is not an ISO 3166 alpha-2 code: 'usa'", row(4, name, "usa").rstrip("\n")),
        (5, "full_name is 2000000 bytes, over the 1048576-byte limit of a field",
         f"{row(5, 'x' * 2_000_000)[:normalize.RAW_LINE_CHARS]} [... truncated: the row is"
         f" {len(row(5, 'x' * 2_000_000))} bytes]")]
    assert cur.execute("select status, rows_total, rows_loaded, rows_rejected, run_id"
                       " from ops.file_manifest").fetchall() == [
        ("loaded", 5, 1, 4, "run-snowflake")]
