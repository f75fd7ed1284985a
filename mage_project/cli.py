"""Command line: ``python -m mage_project run PIPELINE [--start ... --end ...]``.

Runs the pipeline through Mage (the same blocks the scheduler and the editor run, with their
``@test``s on), records a failed run and sends its alert (``mage run`` sends none), and exits
non-zero with the reason on stderr. Every setting the run will read is checked first, so a
setting that cannot work stops it before anything is fetched or written.

It shows a line per block on stderr (``progress``; live on a terminal) and ends in one line: the
run's summary on stdout, or on stderr what failed and what to do. Mage's and dbt's output go to
the run's log file, ``<data dir>/logs/<pipeline>-<run id>.log``, which that line names
(``--verbose``: onto the terminal instead).

Exit status of ``run``: ``EXIT_CODES`` below (shown by ``--help``).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from mage_project import config, progress, transform
from mage_project.runner import BlockEvent, first_line, output_to, run_pipeline

log = logging.getLogger("mage_project")

PIPELINES = ("user_activity_ingest", "warehouse_elt")

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_BAD_SETTINGS, EXIT_FILES_FAILED = 0, 1, 2, 3
EXIT_CODES = f"""exit status:
  {EXIT_SUCCEEDED}  the run succeeded
  {EXIT_FAILED}  the run failed: recorded in ops.pipeline_runs, its alert sent, the reason on
     stderr (also when the run's file results cannot be read back from the warehouse)
  {EXIT_BAD_SETTINGS}  bad arguments or settings ("error: ..." on stderr, naming the setting):
     nothing ran
  {EXIT_FILES_FAILED}  the run completed but some input files failed (warehouse_elt): every
     other file was loaded; each failed one is alerted and listed on stderr (ops.file_manifest)
"""


def _record_failure(pipeline: str, variables: dict, error: BaseException, started: float) -> list[str]:
    """The failed run into ops.pipeline_runs and its alert sent: what of it did not happen."""
    from mage_project import alerts, lineage
    from mage_project.runs import record_failed_run

    reason, missed = f"{type(error).__name__}: {error}", []
    lineage.run_failed(pipeline, variables["run_id"], reason)  # unless its block's FAIL ended it
    try:
        record_failed_run(
            pipeline,
            variables["run_id"],
            reason,
            window_start=variables.get("window_start"),
            window_end=variables.get("window_end"),
            started_at=datetime.now(UTC) - timedelta(seconds=time.monotonic() - started),
        )
    except Exception as exc:  # the warehouse may be what failed: still alert and report
        log.error("could not record the failed run in ops.pipeline_runs: %s", exc)
        missed.append(f"not recorded in ops.pipeline_runs: {first_line(exc)}")
    if not alerts.send_failure_alert(
        pipeline,
        variables["run_id"],
        reason,
        window_start=variables.get("window_start"),
        window_end=variables.get("window_end"),
    ):
        missed.append("no alert sent: SMTP_HOST is unset" if config.smtp().host is None
                      else "its alert could not be sent (the log says why)")
    return missed


MORE_LINES = 10  # of a failed run's reason, after its first (all of it is in the log file)


def _fail(pipeline: str, run_id: str, error: BaseException, block: BlockEvent | None,
          log_file: Path | None, missed: list[str]) -> int:
    """Say on stderr that the run failed, and why; its last line says what failed (the block,
    the error's first line), what to do and where the whole output is. ``missed``: what of
    recording the failure and alerting did not happen."""
    print(f"{pipeline} run {run_id} failed: {first_line(error)}", file=sys.stderr)
    more = str(error).strip().splitlines()[1:]
    for line in more[:MORE_LINES]:
        print(f"  {line}", file=sys.stderr)
    if len(more) > MORE_LINES:
        print(f"  ... ({len(more) - MORE_LINES} more lines)", file=sys.stderr)
    for line in missed:
        print(f"  ({line})", file=sys.stderr)
    what = (f"block {block.block} failed: {block.error}" if block is not None
            else f"{pipeline} failed before its first block: {first_line(error)}")
    print(progress.error_line(what, "fix the cause, then run the same command again", log_file),
          file=sys.stderr)
    return EXIT_FAILED


def check_settings(pipeline: str) -> None:
    """Resolve every setting ``pipeline``'s run reads, so one that cannot work raises
    ConfigError now, naming it, rather than midway through the run (or, for the alert
    settings, silently when the run fails). Only reads them: the embedded PostgreSQL, when
    POSTGRES_HOST is unset, starts on the run's first connection."""
    if pipeline == "user_activity_ingest":
        config.activity_api()
        config.landing_chunk_rows()
        config.activity_lookback_hours()
    else:
        config.marts_build_lease_seconds()
    config.landing_url()
    config.run_lock_timeout_seconds()
    config.smtp()
    config.work_dir()
    if config.warehouse() == "snowflake":
        config.snowflake()
    else:
        config.postgres()


def failed_files(run_id: str) -> list[tuple[str, str, str | None]]:
    """(file_key, status, error) of each file the run ``run_id`` did not load, by key. Any
    status but 'loaded' counts: a file the source sent broken and one that failed here alike."""
    from mage_project import warehouse

    db = warehouse.backend()
    with db.connection(config.LOADER) as conn, db.transaction(conn) as cur:
        cur.execute(
            "select file_key, status, error from ops.file_manifest"
            " where run_id = %s and status <> 'loaded' order by file_key",
            (run_id,),
        )
        return [tuple(row) for row in cur.fetchall()]


def run_variables(args: argparse.Namespace) -> dict:
    """The run's variables from its arguments, its settings checked. Raises ValueError or
    ConfigError, naming what cannot work."""
    from mage_project.runs import new_run_id
    from mage_project.windows import parse_bound

    variables: dict = {"run_id": args.run_id or new_run_id()}
    if (args.start is None) != (args.end is None):
        raise config.ConfigError("give both --start and --end, or neither")
    if args.start is not None:
        start, end = parse_bound(args.start), parse_bound(args.end)
        if end <= start:
            raise ValueError(f"--end {args.end} is not after --start {args.start}")
        variables.update(window_start=start.isoformat(), window_end=end.isoformat())
    variables["execution_date"] = (
        parse_bound(args.execution_date) if args.execution_date else datetime.now(UTC)
    ).isoformat()
    sample_rows = config.sample_rows(args.sample_rows)
    if sample_rows is not None:
        variables["sample_rows"] = sample_rows
    if args.pipeline == "warehouse_elt":
        if args.start is not None:
            raise ValueError("warehouse_elt loads whatever files are new: no --start/--end")
        variables["wait_for_files"] = False  # the command line loads what is there, now
    # Settings are checked before Mage starts, so a bad one fails fast and by name.
    check_settings(args.pipeline)
    return variables


def run_log(pipeline: str, run_id: str) -> Path:
    """The log file of a run: Mage's and dbt's output, and this process's log records."""
    return config.data_dir() / "logs" / f"{pipeline}-{run_id}.log"


def run_command(args: argparse.Namespace) -> int:
    try:
        variables = run_variables(args)
    except (ValueError, config.ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    pipeline, run_id = args.pipeline, variables["run_id"]
    log_file = None if args.verbose else run_log(pipeline, run_id)
    started = time.monotonic()
    error, missed = None, []
    with progress.Progress(live=not args.verbose) as shown, (
            contextlib.nullcontext() if log_file is None else output_to(log_file)):
        try:
            run_pipeline(pipeline, variables, observer=shown)
        except Exception as exc:
            error = exc
            missed = _record_failure(pipeline, variables, exc, started)
        except KeyboardInterrupt:
            from mage_project import lineage

            lineage.abort(pipeline, run_id, "interrupted (SIGINT) on the command line")
            raise
    if error is not None:
        return _fail(pipeline, run_id, error, shown.failed, log_file, missed)
    elapsed = time.monotonic() - started
    try:
        failed = failed_files(run_id) if pipeline == "warehouse_elt" else []
    except Exception as exc:  # the run is recorded; only its file results could not be read
        print(f"{pipeline} run {run_id} completed, but which of its files failed could not be"
              f" read from ops.file_manifest: {first_line(exc)}", file=sys.stderr)
        print(progress.error_line(
            f"reading ops.file_manifest failed: {first_line(exc)}",
            f"the run completed: once the warehouse answers, its files' statuses are in"
            f" ops.file_manifest (run_id {run_id})", log_file), file=sys.stderr)
        return EXIT_FAILED
    if failed:
        print(f"{pipeline} run {run_id} completed in {elapsed:.1f} s, but"
              f" {len(failed)} file(s) failed (every other file was loaded):", file=sys.stderr)
        for key, status, file_error in failed:
            print(f"  {key}: {status}: {file_error}", file=sys.stderr)
        print(progress.error_line(
            f"{len(failed)} input file(s) not loaded (listed above, each alerted)",
            "a 'failed' file loads once it is written again, corrected; an 'error' one on the"
            " next run", log_file), file=sys.stderr)
        return EXIT_FILES_FAILED
    print(progress.succeeded(pipeline, run_id, elapsed, log_file))
    return EXIT_SUCCEEDED


def products_command(as_json: bool) -> int:
    from mage_project import contracts

    try:
        print(contracts.products_command(as_json=as_json))
    except contracts.ContractError as error:  # names the file, then each JSON path and message
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return EXIT_SUCCEEDED


def roles_command() -> int:
    """``warehouse roles``: the SQL that creates the project's roles on the configured warehouse."""
    from mage_project import warehouse

    try:
        print(warehouse.backend().roles_sql(), end="")
    except (config.ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    return EXIT_SUCCEEDED


def build_parser() -> argparse.ArgumentParser:
    """The command line's arguments: each sub-command and its options."""
    parser = argparse.ArgumentParser(prog="python -m mage_project", epilog=f"run's {EXIT_CODES}",
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a pipeline through Mage", epilog=EXIT_CODES,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    # The project's pipelines, and those a new product added (python -m mage_project new-product).
    run.add_argument("pipeline", choices=sorted({*PIPELINES, *(
        p.parent.name for p in (config.PROJECT_ROOT / "pipelines").glob("*/metadata.yaml"))}))
    run.add_argument("--start", help="window start: YYYY-MM-DD or RFC 3339 datetime (UTC)")
    run.add_argument("--end", help="window end (exclusive): YYYY-MM-DD or RFC 3339 datetime")
    run.add_argument("--execution-date",
                     help="the run's logical time for a scheduled window (default: now)")
    run.add_argument("--sample-rows", metavar="N",
                     help="stop after N events, N >= 1 (trials; the watermark stays)")
    run.add_argument("--verbose", "-v", action="store_true",
                     help="Mage's and dbt's output on the terminal as the run goes (no log file)")
    run.add_argument("--run-id", help=argparse.SUPPRESS)
    sub.add_parser("demo", help="serve the simulator and ingest the last 3 days")
    sub.add_parser("editor", help="Mage's editor on http://127.0.0.1:6789 for this project")
    sub.add_parser("dbt", help="dbt ARGS on the project and the configured warehouse")
    products = sub.add_parser("products", help="the data products, their owners, tables, pipelines"
                                               " and alert routes (contracts/)")
    products.add_argument("--json", action="store_true", help="one JSON object per product")
    check = sub.add_parser("check", help="the platform's policies on the project (mage_project.policy):"
                                         " one line per finding, exit 1 on any error")
    output = check.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="the findings as one JSON list")
    output.add_argument("--format", choices=("text", "json", "github", "gitlab"), default="text",
                        help="text (default); json (as --json); github: workflow commands GitHub"
                             " Actions shows as annotations; gitlab: a Code Quality report (JSON)")
    check.add_argument("--base", metavar="REF", help="git ref the contracts must stay compatible with"
                                                     " (default: the merge base with main, or HEAD)")
    roles = sub.add_parser("warehouse", help="the warehouse's administration").add_subparsers(
        dest="action", required=True)
    roles.add_parser("roles", help="print the SQL that creates the project's roles (README: Warehouse"
                                   " roles), for an administrator of the configured warehouse")
    new_product = sub.add_parser("new-product", help="write a new data product: contract, dbt mart,"
                                                     " pipeline and tests that pass check")
    new_product.add_argument("domain", help="the owning domain, e.g. product")
    new_product.add_argument("name", help="the product's name: its mart, pipeline and contract")
    new_product.add_argument("--from", dest="source", metavar="SOURCE",
                             help="the dbt model or raw table (schema.table) it selects from"
                                  " (default: raw.user_activity)")
    lineage = sub.add_parser("lineage", help="the lineage hub (OpenLineage receiver) and its graph"
                             ).add_subparsers(dest="action", required=True)
    serve = lineage.add_parser("serve", help="receive OpenLineage events (key: LINEAGE_HUB_API_KEY)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=5000, help="port to bind (default: 5000)")
    graph = lineage.add_parser("graph", help="datasets and jobs of every producer, to the products")
    graph.add_argument("--dataset", metavar="NAME", help="only what is up- and downstream of it")
    graph.add_argument("--column", metavar="COL", help="with --dataset: the column's upstream columns")
    graph.add_argument("--format", choices=("text", "json", "dot", "mermaid"), default="text")
    graph.add_argument("--all", action="store_true", help="the checks and tests too (jobs that only read)")
    impact = lineage.add_parser("impact", help="what is downstream of a dataset or column, whose it is")
    impact.add_argument("target", metavar="DATASET[.COLUMN]")
    impact.add_argument("--format", choices=("text", "json"), default="text")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["dbt"]:  # everything after it is dbt's
        return transform.dbt_command(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "run":
        return run_command(args)
    if args.command == "products":
        return products_command(args.json)
    if args.command == "check":
        from mage_project import policy

        return policy.check_command(as_json=args.json, base=args.base, output_format=args.format)
    if args.command == "new-product":
        from mage_project import scaffold

        return scaffold.new_product_command(args.domain, args.name, args.source)
    if args.command == "warehouse":
        return roles_command()
    if args.command == "lineage":
        from mage_project.lineage import commands

        if args.action == "serve":
            return commands.serve_command(args.host, args.port)
        if args.action == "graph":
            return commands.graph_command(args.dataset, args.column, args.format, args.all)
        return commands.impact_command(args.target, args.format)
    if args.command == "editor":
        from mage_project import editor

        return editor.main()
    from mage_project import demo

    return demo.main()
