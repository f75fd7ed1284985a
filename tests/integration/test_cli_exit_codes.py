"""The command line's exit status 3: warehouse_elt completed, every good file loaded, but some
input files failed; each is alerted and listed on stderr. A run whose files all loaded, or that
loaded nothing new, exits 0."""

from __future__ import annotations

import re
from datetime import date

import pytest
from conftest import query, run_cli
from support import SmtpSink

from mage_project import config
from mage_project.landing import LandingZone
from mage_project.sources.file_drops import write_drops

pytestmark = pytest.mark.e2e  # whole runs of warehouse_elt through Mage

EMPTY = "crm/customers/2026-11-02/empty.csv"
REPEATED = "billing/payments/2026-11-02/repeated-header.csv"


def test_a_run_with_failed_files_exits_3_listing_them_after_loading_the_rest(warehouse, monkeypatch):
    zone = LandingZone(config.landing_url())
    good = write_drops(zone, date(2026, 11, 1), date(2026, 11, 3))
    zone.write_bytes(EMPTY, b"")
    zone.write_bytes(REPEATED, b"payment_id,payment_id\np1,p1\n")
    with SmtpSink() as smtp:
        monkeypatch.setenv("SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("SMTP_PORT", str(smtp.port))
        monkeypatch.setenv("ALERT_EMAIL_TO", "data-team@example.com")
        first = run_cli("run", "warehouse_elt")
        alerts = smtp.wait_for(2)
    assert first.returncode == 3, first.stderr[-3000:]
    # Every other file was loaded, in this run.
    (run_id,) = re.search(r"warehouse_elt run (\S+) completed in [\d.]+ s, but 2 file\(s\) failed"
                          r" \(every other file was loaded\):", first.stderr).groups()
    assert query(warehouse, "select file_key, status from ops.file_manifest where run_id = %s"
                            " order by file_key", (run_id,)) == sorted(
        [(key, "loaded") for key in good] + [(EMPTY, "failed"), (REPEATED, "failed")])
    assert all(n > 0 for (n,) in query(
        warehouse, "select count(*) from raw.crm__customers union all"
                   " select count(*) from raw.billing__payments"))
    # The failed files are listed with their reasons, and nothing claims success.
    listed = re.findall(r"^  (\S+): (\w+): (.*)$", first.stderr, re.MULTILINE)
    assert [(key, status) for key, status, _ in listed] == [(REPEATED, "failed"), (EMPTY, "failed")]
    assert listed[1][2] == "the file is empty (0 bytes)"
    assert "repeats a column" in listed[0][2]
    assert not re.search(r"run \S+ succeeded in", first.stdout + first.stderr)
    # The run itself completed (the marts were published), and each failed file was alerted.
    assert query(warehouse, "select count(*) from ops.marts_publications") == [(1,)]
    assert sorted(next(k for k in (EMPTY, REPEATED) if k in m.get_content()) for m in alerts) == [
        REPEATED, EMPTY]

    # The next run finds nothing new: this run's files all fine (none), so it exits 0.
    again = run_cli("run", "warehouse_elt")
    assert again.returncode == 0, again.stderr[-3000:]
    assert re.search(r"^warehouse_elt run \S+ succeeded in [\d.]+ s \(log: \S+\.log\)$", again.stdout,
                     re.MULTILINE)
