"""The test oracle of the file drops: what a correct loader ends up with, computed from the rows
of the files alone, independently of the loader and of the SQL models."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from pathlib import PurePosixPath

from mage_project.sources.activity_simulator import parse_rfc3339
from mage_project.sources.file_drops import AD_SPEND, COLUMNS, CUSTOMERS


def expected_latest(rows_by_file: Iterable[tuple[str, list[dict]]], entity: str) -> dict:
    """The rows that survive "latest wins", by key: what a correct loader ends up with.

    ``rows_by_file`` holds (path or key of the file, its rows), in any order; files are ordered
    by the date folder of their path, then by file name. Keys and values are taken from the
    rows as they are (CSV texts when the rows come from ``generate_day`` or a ``DictReader``).

    - customers, by ``customer_id``; payments, by ``payment_id``: the row with the latest
      ``updated_at`` (compared as instants). On equal ``updated_at`` the later file wins, and
      within one file the later row.
    - ad spend, by ``(date, campaign, channel)``: the row of the latest file, and within one
      file the later row.
    """
    if entity not in COLUMNS:
        raise ValueError(f"unknown entity {entity!r}; expected one of {list(COLUMNS)}")
    files = sorted(rows_by_file, key=lambda item: _file_order(item[0]))  # stable: ties keep input order
    if entity == AD_SPEND:
        rows = {}
        for _, file_rows in files:
            for row in file_rows:
                rows[(row["date"], row["campaign"], row["channel"])] = dict(row)
        return rows
    id_column = "customer_id" if entity == CUSTOMERS else "payment_id"
    best: dict = {}
    for _, file_rows in files:
        for row in file_rows:
            at = parse_rfc3339(row["updated_at"])
            key = row[id_column]
            if key not in best or at >= best[key][0]:
                best[key] = (at, dict(row))
    return {key: row for key, (_, row) in best.items()}


def _file_order(path: str) -> tuple[date, str]:
    parts = PurePosixPath(path).parts
    try:
        return date.fromisoformat(parts[-2]), parts[-1]
    except (IndexError, ValueError):
        raise ValueError(f"{path!r} is not <source>/<entity>/<YYYY-MM-DD>/<name>") from None
