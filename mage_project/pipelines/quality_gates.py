"""warehouse_elt's quality gates: expectations on the raw loads, then write-audit-publish.

1. ``check_raw_file_drops`` holds every loaded file version the gate has not passed yet (the
   latest loaded version of each landing file) to its raw table's contract: the Great
   Expectations suite the contract gives (``Entity.expectations``) and the contract's other
   quality rules, measured in the warehouse over the same rows (``enforcement.check_versions``).
   It stores every result in ``ops.quality_results`` and the verdict on each version in
   ``ops.file_manifest.quality_status``, and raises when an error-level check failed; the owning
   domain is alerted when new data fails (not again each run while the same versions fail). A
   version that failed is checked again by every run until a new version of its file replaces
   it, so the marts stay as they are until then.
2. Write-audit-publish of the marts, in three blocks around Mage's own dbt block:
   ``plan_build`` decides whether anything the marts are built from changed since their last
   publish, and if so takes the marts' build lease and names the dbt build's arguments (the
   audit schema, a target path of the run's own); Mage's dbt block runs ``dbt build`` with them;
   ``publish_build`` stores every dbt test result and only then swaps the marts in. When the
   dbt block fails, ``store_failed_build`` (its failure callback) stores the test results and
   gives up the lease; a run killed while it holds the lease (no callback runs) leaves it to the
   next run on the machine, which takes it over at once (``_bind_lease``; for a run of Mage's
   scheduler, once its process group is gone: ``_scheduler_group``). Nothing is published
   while a loaded version has not passed gate 1.

Results are committed before anything raises: they are the evidence of why nothing was published.
Everything runs on the configured warehouse (``warehouse.backend()``), in portable SQL.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import multiprocessing
import os
import shlex
import shutil
import socket
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TextIO

from mage_project import (
    alerts,
    config,
    contracts,
    enforcement,
    lineage,
    processes,
    quality,
    runs,
    transform,
    warehouse,
)
from mage_project.entities import FILE_ENTITIES
from mage_project.faults import failpoint
from mage_project.lineage import dbt as dbt_lineage

log = logging.getLogger(__name__)
PIPELINE = "warehouse_elt"
# The blocks whose lineage is emitted here (dbt's from its artifacts: Mage runs it alone).
GATE_BLOCK, PLAN_BLOCK, DBT_BLOCK, PUBLISH_BLOCK = (
    "check_raw_quality_file_drops", "plan_marts_build", "build_dbt_warehouse", "publish_marts")
_ENTITIES = {e.table: e for e in FILE_ENTITIES.values()}


class QualityGateFailed(RuntimeError):
    """An error-level check failed, or raw data has not passed the gate: nothing is published."""


def versions_to_check(cur) -> list[quality.FileVersion]:
    """The latest loaded version of every landing file, unless the gate passed it already."""
    return [version for version, _checked in _unpassed(cur)]


def _unpassed(cur) -> list[tuple[quality.FileVersion, bool]]:
    """Each version of ``versions_to_check``, and whether the gate checked it before (it failed)."""
    cur.execute(
        "select m.entity, m.file_key, m.checksum, m.quality_status from ops.file_manifest as m"
        " join (select file_key, max(version) as version from ops.file_manifest"
        "       where status = 'loaded' group by file_key) as latest"
        " on latest.file_key = m.file_key and latest.version = m.version"
        " where m.quality_status is distinct from 'passed'"
        " order by m.entity, m.file_key"
    )
    return [(quality.FileVersion(_ENTITIES[entity], key, checksum), status is not None)
            for entity, key, checksum, status in cur.fetchall()]


def _mark(cur, versions: list[quality.FileVersion], status: str, run_id: str) -> None:
    cur.executemany(
        "update ops.file_manifest set quality_status = %s, quality_run_id = %s"
        " where file_key = %s and checksum = %s and status = 'loaded'",
        [(status, run_id, v.file_key, v.checksum) for v in versions],
    )


def check_raw_file_drops(run_id: str) -> dict:
    """The raw-load gate. Returns a summary of the checks; raises QualityGateFailed when an
    error-level check failed (after storing every result and alerting the owners)."""
    with lineage.block(PIPELINE, GATE_BLOCK, run_id) as step:
        return _check_raw_file_drops(run_id, step)


def _check_raw_file_drops(run_id: str, step) -> dict:
    db = warehouse.backend()
    warehouse.migrate(db)
    with db.connection(config.LOADER) as conn:
        with db.transaction(conn) as cur:
            unpassed = _unpassed(cur)
            versions = [version for version, _checked in unpassed]
            # None new: what fails failed before (this run's retry, or no new file since).
            new = not all(checked for _version, checked in unpassed)
            results = enforcement.check_versions(cur, versions)
        results = quality.run_expectations(conn, versions) + results
        for result in results:
            step.checks.setdefault(result.table_name, []).append(result)
        conn.rollback()  # end the reading transaction (psycopg2 opens one implicitly)
        failpoint("gate_before_verdict")
        summary = {"run_id": run_id, "file_versions": len(versions), **quality.summary(results)}
        with db.transaction(conn) as cur:
            _mark(cur, versions, "failed" if summary["failed_error"] else "passed", run_id)
            summary["stored"] = quality.store(cur, run_id, PIPELINE, results)
    failpoint("gate_after_verdict")
    for result in results:
        if result.passed is False:
            log.warning("%s", result)
    log.info("%s: quality gate over %d file versions: %d checks, %d failed at error level, "
             "%d at warn level", PIPELINE, len(versions), summary["checks"],
             len(summary["failed_error"]), len(summary["failed_warn"]))
    if summary["failed_error"]:
        blocking = [r for r in results if r.blocking]
        if new:
            alerts.send_contract_alert(PIPELINE, run_id, blocking, _owners(blocking), stopped="used")
        raise QualityGateFailed("\n".join([
            f"raw quality gate: {len(blocking)} error-level check(s) failed; the marts were not "
            "rebuilt and stay as they were (details in ops.quality_results)",
            *(f"- {r.problem}" for r in blocking)]))
    return summary


def _owners(results: list[quality.QualityResult]) -> list[contracts.Product]:
    """The products that declare the raw tables of ``results``."""
    owners = {}
    for r in results:
        product, _ = contracts.raw_table(r.table_name)
        owners[product.key] = product
    return list(owners.values())


def inputs_fingerprint(cur) -> str:
    """What the marts are built from: the loaded file versions, the successful activity loads
    and the dbt project's own files. Unchanged since the last publish: nothing to rebuild."""
    cur.execute("select count(*), max(recorded_at) from ops.file_manifest where status = 'loaded'")
    files = cur.fetchone()
    cur.execute("select count(*), max(finished_at) from ops.pipeline_runs"
                " where pipeline = 'user_activity_ingest' and status = 'success'")
    activity = cur.fetchone()
    digest = hashlib.sha256(repr((tuple(files), tuple(activity))).encode())
    for path in sorted(p for p in transform.DBT_PROJECT.rglob("*")
                       if p.is_file() and p.suffix in (".sql", ".yml")):
        digest.update(str(path.relative_to(transform.DBT_PROJECT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _last_published(cur) -> str | None:
    cur.execute("select inputs_fingerprint from ops.marts_publications"
                " order by published_at desc limit 1")
    row = cur.fetchone()
    return row[0] if row else None


def _inputs_published(db, conn, select: str | None) -> tuple[str, bool]:
    """(the inputs' fingerprint, whether the marts were last published from those inputs and no
    ``select`` asks for a build anyway)."""
    with db.transaction(conn) as cur:
        inputs = inputs_fingerprint(cur)
        return inputs, not select and _last_published(cur) == inputs


def plan_build(run_id: str, select: str | None = None) -> dict:
    """Whether the marts need building and, if so, the arguments of the dbt build (after the
    ``build`` command), with the marts' build lease taken for ``run_id``.

    Up to date (``up_to_date``: nothing they are built from changed since their last publish and
    no ``select`` asks for a build): nothing is built, and the dbt block is skipped. Raises when a
    loaded file version has not passed the raw gate, or when another run holds the lease past
    RUN_LOCK_TIMEOUT_SECONDS."""
    with lineage.block(PIPELINE, PLAN_BLOCK, run_id) as step:
        plan = _plan_build(run_id, select)
        step.last = plan["up_to_date"]  # the dbt block and the publish are skipped
    return plan


def _plan_build(run_id: str, select: str | None) -> dict:
    db = warehouse.backend()
    warehouse.migrate(db)
    with db.connection(config.TRANSFORMER) as conn:
        _require_gate_passed(db, conn)
        inputs, up_to_date = _inputs_published(db, conn, select)
        if up_to_date:
            log.info("%s: nothing the marts are built from changed since their last publish; "
                     "not rebuilding them", PIPELINE)
            _record_success(db, conn, run_id)  # the run ends here: the dbt block is skipped
        else:
            _take_lease(db, conn, run_id)
            failpoint("plan_after_lease")
            # A run that waited for the lease may find the marts built from these very inputs
            # by the run that held it: nothing left to build.
            inputs, up_to_date = _inputs_published(db, conn, select)
            if up_to_date:
                log.info("%s: the run that held the lease published the marts from these "
                         "inputs; not rebuilding them", PIPELINE)
                _give_up_lease(db, conn, run_id)
                _record_success(db, conn, run_id)
    transform.prune_run_targets()
    target = transform.run_target_path(run_id)
    shutil.rmtree(target, ignore_errors=True)  # an earlier attempt's artifacts
    args = ["--target-path", str(target), *transform.build_args(select)]
    return {"run_id": run_id, "up_to_date": up_to_date, "inputs_fingerprint": inputs,
            "target_path": str(target), "dbt_args": shlex.join(args)}


def build_still_planned(plan: dict) -> bool:
    """Whether the dbt build ``plan`` names is to run now: the marts are out of date and the
    plan's run still holds their build lease. A run that Mage resumes after its processes were
    killed (it runs a crashed block again) may find its lease taken over meanwhile by the next
    run: building into the audit schema then would overlap that run's build, so it builds
    nothing (and publish_marts, skipped with it, publishes nothing)."""
    if plan["up_to_date"]:
        return False  # plan_marts_build ended the run
    db = warehouse.backend()
    with db.connection(config.TRANSFORMER) as conn, db.transaction(conn) as cur:
        holder = _holder(db, cur)
    if holder != plan["run_id"]:
        log.warning("%s: run %s no longer holds the marts' build lease (held by %s): not "
                    "building them", PIPELINE, plan["run_id"], holder or "no run")
        lineage.run_completed(PIPELINE, plan["run_id"])  # the rest of the run is skipped
        return False
    return True


def publish_build(plan: dict) -> dict:
    """Store every test result of the build ``plan`` named, then publish the audited marts when
    all passed (and every loaded file version passed the raw gate). Gives up the build lease
    whatever happens. Returns what ran, with ``published``."""
    if plan["up_to_date"]:
        return {"models": 0, "tests": 0, "statuses": {}, "published": False, "up_to_date": True}
    run_id, target = plan["run_id"], Path(plan["target_path"])
    dbt_lineage.emit_build(PIPELINE, run_id, DBT_BLOCK, target)
    with lineage.block(PIPELINE, PUBLISH_BLOCK, run_id, last=True) as step:
        published = _publish_build(plan, run_id, target)
        marts = sorted({t.name for p in contracts.load_products() for t in p.tables
                        if t.schema == "marts"})
        step.outputs = lineage.tables_written(warehouse.backend(), config.TRANSFORMER,
                                              [(table, None) for table in marts])
    return published


def _publish_build(plan: dict, run_id: str, target: Path) -> dict:
    failpoint("publish_start")
    db = warehouse.backend()
    with db.connection(config.TRANSFORMER) as conn:
        try:
            _require_lease(db, conn, run_id)
            try:
                summary = transform.summary(target)
            except FileNotFoundError:
                raise QualityGateFailed(
                    f"not publishing the marts: no dbt build ran with the arguments run "
                    f"{run_id} planned ({target / 'run_results.json'} is missing)") from None
            results = _store_tests(db, conn, run_id, summary)
            failed = {k: v for k, v in summary["statuses"].items() if k not in ("success", "pass")}
            blocking = [r for r in results if r.blocking]
            if blocking or failed.keys() - {"warn", "skipped"}:
                raise QualityGateFailed(
                    f"not publishing the marts: the dbt build did not pass ({failed}); "
                    f"failed tests: {[r.check_name for r in blocking]}")
            results += _require_contracts_kept(db, conn, run_id, summary)
            _require_gate_passed(db, conn)  # nothing loaded meanwhile that the gate has not seen
            failpoint("publish_before_swap")
            transform.publish()
            failpoint("publish_after_swap")
            with db.transaction(conn) as cur:
                cur.execute("insert into ops.marts_publications (run_id, inputs_fingerprint)"
                            " values (%s, %s)", (run_id, plan["inputs_fingerprint"]))
            failpoint("publish_after_record")
            _record_success(db, conn, run_id)
        finally:
            _give_up_lease(db, conn, run_id)
            shutil.rmtree(target, ignore_errors=True)
    log.info("%s: marts published after %d dbt tests passed", PIPELINE, summary["tests"])
    return {**{k: v for k, v in summary.items() if k != "test_results"},
            "quality": quality.summary(results), "published": True}


def _require_contracts_kept(db, conn, run_id: str, summary: dict, pipeline: str = PIPELINE,
                            products: list | None = None) -> list:
    """Hold the audited marts to their products' contracts (``mage_project.enforcement``), store
    every result in ops.quality_results, and refuse to publish, naming each product, table,
    column and rule broken, when one is; the owning domains are alerted. When they are kept, the
    analyst role is granted the columns the contracts allow (``enforcement.grant_reads``)."""
    products = contracts.load_products() if products is None else products
    with db.transaction(conn) as cur:
        # A retry of the block (Mage's retry_config) after a broken contract alerts no one again.
        cur.execute("select count(*) from ops.quality_results where run_id = %s"
                    " and check_kind = %s and passed = false", (run_id, enforcement.KIND))
        (alerted,) = cur.fetchone()
        results = enforcement.check_published(db, cur, products, relation=transform.audit_relation,
                                              dbt_tests=summary["test_results"])
        quality.store(cur, run_id, pipeline, results)
    broken = [r for r in results if r.blocking]
    if broken:
        if not alerted:
            alerts.send_contract_alert(pipeline, run_id, broken, list(products))
        raise QualityGateFailed("not publishing the marts: they break their contracts: "
                                + "; ".join(enforcement.violations(broken)))
    with db.transaction(conn) as cur:
        enforcement.grant_reads(db, cur, products, relation=transform.audit_relation)
    return results


def build_and_publish(model: str, run_id: str, pipeline: str) -> dict:
    """Write-audit-publish of one mart, for a data product's own pipeline (``new-product``
    writes one): under the marts' build lease, so that no warehouse_elt build shares the audit
    schema, ``dbt build`` of ``model`` and what it is built from, the mart into ``marts__audit``;
    every test result stored; the products that declare it held to their contracts there; only
    then the mart swapped into ``marts``. When anything fails the published mart stays as it was
    (and the audit one for inspection). Nothing is published while a loaded file version has not
    passed the raw gate, as for warehouse_elt. Returns the build's summary, with ``published``."""
    db = warehouse.backend()
    target = transform.run_target_path(run_id)
    warehouse.migrate(db)
    with db.connection(config.TRANSFORMER) as conn:
        _require_gate_passed(db, conn)
        _take_lease(db, conn, run_id)
        try:
            shutil.rmtree(target, ignore_errors=True)
            summary = _build_model(db, conn, model, run_id, pipeline, target)
            products = [p for p in contracts.load_products() if model in p.dbt_models]
            results = _require_contracts_kept(db, conn, run_id, summary, pipeline, products)
            _require_gate_passed(db, conn)
            transform.publish()
            with db.transaction(conn) as cur:
                runs.record_run(cur, run_id=run_id, pipeline=pipeline, status="success")
        finally:
            _give_up_lease(db, conn, run_id)
            shutil.rmtree(target, ignore_errors=True)
    log.info("%s: marts.%s published after %d dbt tests passed", pipeline, model, summary["tests"])
    return {**{k: v for k, v in summary.items() if k != "test_results"},
            "quality": quality.summary(results), "published": True}


def _build_model(db, conn, model: str, run_id: str, pipeline: str, target: Path) -> dict:
    """``dbt build`` of ``+model`` for write-audit-publish, its test results stored; raises when
    it did not pass. Then the views that depend on the views it rebuilt are built again: rebuilding
    a view drops the views on it (cascade) on PostgreSQL."""
    try:
        # cautious: only the tests of what is built (not a relationships test of another mart).
        transform.run_dbt("build", "--select", f"+{model}", "--indirect-selection", "cautious",
                          *transform.build_args(), target_path=target)
    finally:
        summary = transform.summary(target) if (target / "run_results.json").exists() else None
        if summary is not None:
            _store_tests(db, conn, run_id, summary, pipeline)
    views = transform.built_views(target)
    if views:
        with tempfile.TemporaryDirectory(prefix="dbt-target-", dir=config.work_dir()) as other:
            transform.run_dbt("run", "--select", *(f"{v}+,config.materialized:view" for v in views),
                              "--exclude", f"+{model}", target_path=Path(other))
    return summary


def store_failed_build(run_id: str) -> int:
    """After the dbt build of ``run_id`` failed: store the results of the tests it ran (the
    evidence of why nothing was published) and give up the build lease. Returns how many."""
    target = transform.run_target_path(run_id)
    db = warehouse.backend()
    stored = 0
    dbt_lineage.emit_build(PIPELINE, run_id, DBT_BLOCK, target)
    with db.connection(config.TRANSFORMER) as conn:
        try:
            if (target / "run_results.json").exists():
                stored = len(_store_tests(db, conn, run_id, transform.summary(target)))
        finally:
            _give_up_lease(db, conn, run_id)
            shutil.rmtree(target, ignore_errors=True)
    return stored


def _record_success(db, conn, run_id: str) -> None:
    """The run's row in ops.pipeline_runs once it has done all it had to (published the marts,
    or found them up to date), with the counts of the file versions it loaded: rows_fetched are
    their rows, rows_loaded and rows_rejected what went where. A failure recorded after it (a
    block's @test) turns it into a failure and keeps the counts."""
    with db.transaction(conn) as cur:
        cur.execute("select coalesce(sum(rows_total), 0), coalesce(sum(rows_loaded), 0),"
                    " coalesce(sum(rows_rejected), 0) from ops.file_manifest where run_id = %s",
                    (run_id,))
        fetched, loaded, rejected = (int(n) for n in cur.fetchone())
        runs.record_run(cur, run_id=run_id, pipeline=PIPELINE, status="success",
                        rows_fetched=fetched, rows_loaded=loaded, rows_rejected=rejected)


def _store_tests(db, conn, run_id: str, summary: dict,
                 pipeline: str = PIPELINE) -> list[quality.QualityResult]:
    results = quality.dbt_test_results(summary["test_results"], conn)
    with db.transaction(conn) as cur:
        quality.store(cur, run_id, pipeline, results)
    return results


def _require_gate_passed(db, conn) -> None:
    with db.transaction(conn) as cur:
        pending = versions_to_check(cur)
    if pending:
        keys = ", ".join(v.file_key for v in pending[:5])
        raise QualityGateFailed(
            f"not publishing the marts: {len(pending)} loaded file version(s) have not passed the "
            f"raw quality gate (check_raw_quality_file_drops), e.g. {keys}")


_LEASE = f"{PIPELINE}:marts"
# What a notebook build's run id starts with (runs.run_id_for(kwargs, notebook=EDITOR)): the
# editor session's run, the same for every block run of one session (so running
# plan_marts_build again takes its own lease again), another for another session.
EDITOR = "editor"


def _take_lease(db, conn, run_id: str) -> None:
    """Take the marts' build lease for ``run_id``: free, expired, this run's own (a retry), or
    held by a run that has ended without publishing or failing (killed: see ``_bind_lease`` for
    a run of the command line or the editor, ``_scheduler_group`` for a run of Mage's
    scheduler). Waits up to RUN_LOCK_TIMEOUT_SECONDS for the run holding it to publish or fail.

    Two builds into the same audit schema would publish each other's half-built tables. A lease
    (not a lock) because the build spans blocks, which Mage may run in separate processes."""
    deadline = time.monotonic() + config.run_lock_timeout_seconds()
    _bind_lease(run_id)  # before the lease names this run, so no run sees it unbound
    group = _scheduler_group()
    try:
        while True:
            now = datetime.now(UTC)
            expires = now + timedelta(seconds=config.marts_build_lease_seconds())
            with db.transaction(conn) as cur:
                if db.take_lease(cur, _LEASE, run_id, now, expires, group):
                    return
                lease = db.read_lease(cur, _LEASE)
            holder, since, until = lease.run_id, lease.acquired_at, lease.expires_at
            if holder is not None and (_lease_holder_gone(holder) or _scheduler_gone(
                    lease.holder_host, lease.holder_boot, lease.holder_process_group)):
                with db.transaction(conn) as cur:
                    taken = db.take_over_lease(cur, _LEASE, run_id, holder, now, expires, group)
                if taken:
                    log.warning("%s: took over the marts' build lease from run %s, whose "
                                "processes have ended without publishing or failing (killed)",
                                PIPELINE, holder)
                    _lease_file(holder).unlink(missing_ok=True)
                    return
                continue  # the holder changed meanwhile: look again
            if time.monotonic() >= deadline:
                raise warehouse.RunLockError(
                    f"another run ({holder}) is building the marts since {since}; gave up after "
                    f"{config.run_lock_timeout_seconds():g} s (RUN_LOCK_TIMEOUT_SECONDS). Its "
                    f"lease ends when it publishes or fails, at the latest at {until} "
                    "(MARTS_BUILD_LEASE_SECONDS)")
            time.sleep(min(2.0, max(0.1, deadline - time.monotonic())))
    except BaseException:
        _unbind_lease(run_id)
        raise


# The lease files this process holds locked (see _bind_lease).
_BOUND: dict[Path, TextIO] = {}


def _lease_file(run_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in run_id)[:80]
    digest = hashlib.sha256(run_id.encode()).hexdigest()[:12]
    return config.work_dir() / "build-leases" / f"{safe}-{digest}.lock"


def _bind_lease(run_id: str) -> None:
    """Tie ``run_id``'s lease to this process for as long as it lives: an exclusive ``flock`` on
    a file named after the run in the work directory, which the kernel releases when the process
    ends, however it ends (SIGKILL and OOM kills included). Another run on this machine that
    finds the lock free takes the lease over at once instead of waiting hours for it to expire.

    Only a process that runs the build's blocks one after the other binds it: the command line
    and the editor's kernel. A block that Mage's scheduler runs in a process of its own (a
    multiprocessing child) binds nothing, since the dbt block and the publish run in other
    processes after it ends: that lease names the scheduler's process group instead
    (``_scheduler_group``). The lease of a run on another machine, whose processes this machine
    cannot see, ends when its run publishes or fails, or at ``expires_at``
    (MARTS_BUILD_LEASE_SECONDS)."""
    path = _lease_file(run_id)
    if multiprocessing.parent_process() is not None or path in _BOUND:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a")  # noqa: SIM115 - held open for as long as the process holds the lease
    except OSError as exc:  # the build may still run; only a kill would leave the lease to expire
        log.warning("%s: the build lease of run %s is not bound to this process (%s): if the "
                    "process is killed, the lease lasts until it expires", PIPELINE, run_id, exc)
        return
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()  # a live process runs this run id too: it holds the lock
        return
    _BOUND[path] = handle


def _unbind_lease(run_id: str) -> None:
    path = _lease_file(run_id)
    handle = _BOUND.pop(path, None)
    if handle is not None:
        path.unlink(missing_ok=True)
        handle.close()


def _lease_holder_gone(run_id: str) -> bool:
    """Whether the process that bound ``run_id``'s lease has ended: its lock file is there and
    no process holds it locked. False when the lease was never bound on this machine."""
    try:
        handle = open(_lease_file(run_id))  # noqa: SIM115 - closed below, releasing the probe
    except OSError:  # not there (never bound here), or not ours to read: cannot tell
        return False
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def _scheduler_group() -> tuple[str | None, str | None, int | None]:
    """(host, boot, process group) to hold the lease by when this is a block process of Mage's
    scheduler (a multiprocessing child), else (None, None, None): the lease is bound by flock.

    The process group is what lives for the whole pipeline run. Mage 0.9.80 runs each block run
    in a process of its own (``pipeline_scheduler_original.PipelineScheduler.__schedule_blocks``
    enqueues ``run_block``; ``queue/process_queue.ProcessQueue`` starts a worker pool process
    that starts a ``Worker`` per job and exits when idle), so the plan's process and its parent
    are gone before the dbt block starts. The scheduler process itself is no better: when it
    dies, its worker pool and block processes go on running (nothing kills them), the server of
    ``mage start`` starts another scheduler within 20 s (``server/scheduler_manager.
    check_scheduler_status``), and that one resumes every pipeline run still ``running`` in
    Mage's database (``schedule_all`` -> ``PipelineScheduler.schedule``, whose
    ``__fetch_crashed_block_runs`` runs again a block run whose process died). A block process
    that dies (an OOM kill) is run again that way too, and its run keeps its lease. None of
    them changes its process group: every process of one ``mage start`` (the server, each
    scheduler, worker pool and block process) is in the group it was started in. While one of
    them lives, the run may go on; when none does (``mage start`` killed with its group, the
    machine rebooted), nothing of the run is left, and the next run takes the lease over at once.

    A process group id means something only on its host, in its pid namespace, until the host
    boots again: the lease records the host (name and /etc/machine-id) and the boot (boot id and
    pid namespace). A scheduler in the same process group as the next run (a script that runs
    ``mage start &`` and then the command line) is seen alive by it: that lease expires."""
    if multiprocessing.parent_process() is None:
        return None, None, None
    return _host(), _boot(), os.getpgrp()


def _host() -> str:
    try:
        machine = Path("/etc/machine-id").read_text().strip()
    except OSError:
        machine = ""
    return f"{socket.gethostname()} {machine}".strip()


def _boot() -> str | None:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot} {os.readlink('/proc/self/ns/pid')}"
    except OSError:  # no /proc (not Linux): the group is not to be told dead from here
        return None


def _scheduler_gone(host: str | None, boot: str | None, group: int | None) -> bool:
    """Whether no process is left of the scheduler's process group that took the lease (see
    ``_scheduler_group``). False when the lease names no group, or one this process cannot see
    (another host, another pid namespace)."""
    here = _boot()
    if group is None or boot is None or here is None or host != _host():
        return False
    if boot.split()[0] != here.split()[0]:
        return True  # the host booted again since: every process of that boot has ended
    # A group id taken again by other processes reads as running: the lease then waits, or expires.
    return boot == here and not processes.group_running(group)


def _require_lease(db, conn, run_id: str) -> None:
    """Publish only while holding the lease: a run so slow that its lease expired may find
    another run building into the audit schema."""
    with db.transaction(conn) as cur:
        holder = _holder(db, cur)
    if holder != run_id:
        raise warehouse.RunLockError(
            f"not publishing the marts: run {run_id} no longer holds their build lease "
            f"(held by {holder or 'no run'}; a lease ends after MARTS_BUILD_LEASE_SECONDS)")


def _give_up_lease(db, conn, run_id: str) -> None:
    conn.rollback()  # whatever failed mid-transaction
    with db.transaction(conn) as cur:
        db.release_lease(cur, _LEASE, run_id)
    _unbind_lease(run_id)


def _holder(db, cur) -> str | None:
    """The run holding the marts' build lease, or None."""
    lease = db.read_lease(cur, _LEASE)
    return lease.run_id if lease else None
