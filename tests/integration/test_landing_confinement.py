"""The landing zone reads only regular files under its root: a symbolic link (to a file or a
folder), a FIFO, a hidden name or a key outside the layout is recorded as failed with its reason,
never followed or read, never silently left out, and the other files load."""

from __future__ import annotations

import os

import boto3
import pytest
from conftest import query
from support import SmtpSink

from mage_project.landing import HIDDEN, LandingZone, RefusedKey
from mage_project.pipelines.file_drops import load_new_files

pytestmark = pytest.mark.integration

HEADER = "customer_id,email,full_name,country,signup_at,utm_campaign,updated_at\n"
ROW = "1,ann@example.com,Ann Doe,US,2026-11-01T10:00:00Z,,2026-11-01T10:00:00Z\n"
GOOD = "crm/customers/2026-11-01/export.csv"
DAY = "crm/customers/2026-11-02"
OUTSIDE_LINE = "root:x:0:0:the-first-line-of-a-file-outside-the-zone"


@pytest.fixture
def zone(tmp_path, monkeypatch):
    url = (tmp_path / "landing").as_uri()
    monkeypatch.setenv("LANDING_URL", url)
    zone = LandingZone(url)
    zone.write_bytes(GOOD, (HEADER + ROW).encode())
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_text(OUTSIDE_LINE + "\n")
    (tmp_path / "outside" / "export.csv").write_text(HEADER + ROW.replace("1,ann", "2,bo"))
    return zone


def not_loaded(summary: dict) -> dict[str, str]:
    return {f["key"]: f["error"] for f in summary["not_loaded"]}


def link_to_a_file(zone, tmp_path) -> str:
    (zone.root / DAY).mkdir(parents=True)
    os.symlink(tmp_path / "outside" / "passwd", zone.root / DAY / "export.csv")
    return f"{DAY}/export.csv"


def test_a_link_to_a_file_outside_is_failed_unread_and_its_target_never_reaches_the_alert(
        warehouse, zone, tmp_path, monkeypatch):
    key = link_to_a_file(zone, tmp_path)
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "data-team@example.com")
        summary = load_new_files()
        (alert,) = smtp.wait_for(1)
    assert (summary["loaded"], summary["failed"]) == (1, 1)
    reason = f"{key}: a symbolic link, not a regular file: not followed or read"
    assert not_loaded(summary) == {key: reason}
    assert query(warehouse, "select file_key, status, error, checksum from ops.file_manifest"
                            " order by file_key") == [(GOOD, "loaded", None, summary["files"][0]["checksum"]),
                                                      (key, "failed", reason, "")]
    assert OUTSIDE_LINE not in alert.get_content() and reason in alert.get_content()
    assert query(warehouse, "select _file_key from raw.crm__customers") == [(GOOD,)]
    # Recorded once: not tried (or alerted) again until it is replaced by a file.
    assert load_new_files()["files"] == []
    os.unlink(zone.root / key)
    zone.write_bytes(key, (HEADER + ROW).encode())
    assert load_new_files()["loaded"] == 1


def test_a_linked_folder_is_failed_and_nothing_under_it_is_read(warehouse, zone, tmp_path):
    (zone.root / "crm" / "customers").mkdir(parents=True, exist_ok=True)
    os.symlink(tmp_path / "outside", zone.root / DAY)
    summary = load_new_files()
    assert not_loaded(summary) == {DAY: f"{DAY}: a symbolic link, not a regular file: not followed or read"}
    assert summary["loaded"] == 1
    with pytest.raises(RefusedKey, match="a symbolic link is on its path: not followed"):
        zone.read_bytes(f"{DAY}/export.csv")
    assert not zone.exists(f"{DAY}/export.csv")


def test_a_fifo_is_failed_without_blocking_the_load(warehouse, zone):
    (zone.root / DAY).mkdir(parents=True)
    os.mkfifo(zone.root / DAY / "export.csv")  # opening it to read would wait for a writer
    summary = load_new_files()
    assert not_loaded(summary) == {f"{DAY}/export.csv": f"{DAY}/export.csv: a FIFO, not a regular file:"
                                                       " not followed or read"}
    assert summary["loaded"] == 1


def test_hidden_names_and_keys_outside_the_layout_are_reported_not_skipped(warehouse, zone):
    zone.write_bytes(f"{DAY}/notes.txt", b"not a drop")
    (zone.root / DAY / ".export.csv").write_text(HEADER + ROW)
    (zone.root / "crm" / "customers" / ".snapshot").mkdir()
    (zone.root / "crm" / "customers" / ".snapshot" / "export.csv").write_text(HEADER + ROW)
    (zone.root / DAY / ".export.csv.tmp").write_text(HEADER)  # the zone's own file, being written
    summary = load_new_files()
    assert not_loaded(summary) == {
        "crm/customers/.snapshot": f"crm/customers/.snapshot: {HIDDEN}",
        f"{DAY}/.export.csv": f"{DAY}/.export.csv: {HIDDEN}",
        f"{DAY}/notes.txt": f"{DAY}/notes.txt: not in the landing layout crm/customers/<YYYY-MM-DD>/"
                            "<name>.csv (or .csv.gz): not loaded"}
    assert summary["loaded"] == 1
    assert zone.list("crm/customers") == [GOOD, f"{DAY}/notes.txt"]


def test_s3_keys_that_leave_the_root_or_hide_are_refused(s3_bucket, monkeypatch):
    client = boto3.client("s3")
    for key in ("drops/crm/customers/2026-11-01/export.csv", "drops/crm/customers/../../secret.csv",
                "drops/crm/customers/2026-11-01/.export.csv"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=(HEADER + ROW).encode())
    zone = LandingZone(f"s3://{s3_bucket}/drops")
    assert {e.key: e.refused for e in zone.entries("crm/customers")} == {
        "crm/customers/2026-11-01/export.csv": None,
        "crm/customers/2026-11-01/.export.csv": HIDDEN,
        "crm/customers/../../secret.csv": "leaves the landing zone's root (a '..', '.' or empty segment):"
                                          " not read"}
    assert zone.list("crm/customers") == ["crm/customers/2026-11-01/export.csv"]
