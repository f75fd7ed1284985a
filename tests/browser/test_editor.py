"""Mage's editor in a real browser: sign in, the pipelines, a pipeline's blocks, every block of
``user_activity_ingest`` run from the notebook in pipeline order (each output checked against the
simulator's events and the warehouse), the triggers; and the session leaves the project's committed
files as they were, in git's status too once the editor stopped.

One editor (``python -m mage_project editor``, what ``make editor`` starts) serves the module, on a
fresh database of the embedded PostgreSQL and the activity API simulator, with Mage's state in
temporary directories. It runs Mage's web server without its scheduler (INSTANCE_TYPE=web_server),
so no trigger of the project starts a run beside the notebook's (the daily ingest's missed slot
between 00:00 and 02:00 UTC would load a window of its own into the same warehouse and move the
watermark the notebook's window starts from; the ELT's file sensor polls every five minutes). The
triggers page reads Mage's database, which the scheduler fills from triggers.yaml: the module does
that one step of the scheduler, with Mage's own function, and starts nothing. One signed-in page
walks through the steps in file order; the last test stops the editor. Each step's screenshot and
Mage's log are kept in ARTIFACTS.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest
import yaml
from conftest import _PROJECT_VARS, ROOT, _admin
from playwright.sync_api import expect, sync_playwright
from psycopg2 import sql
from support import SIM, expected_rows, free_port, stop_group

from mage_project.pipeline_metadata import refresh_git_index
from mage_project.sources.activity_simulator import ActivitySimulator, generate_events

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused by the
# closed network and slow every page; Playwright adds --headless and a fresh profile itself.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / ".data" / "test-artifacts" / "browser"
OWNER = {"DEFAULT_OWNER_EMAIL": "analyst@example.com", "DEFAULT_OWNER_USERNAME": "analyst",
         "DEFAULT_OWNER_PASSWORD": "browser-test-password"}
# What Mage may rewrite: the project's own files, not the library or the tests.
PROJECT_PATHS = ("metadata.yaml", "io_config.yaml", "pipelines", "data_loaders", "transformers",
                 "data_exporters", "callbacks", "sensors")
PIPELINE, LOADER = "user_activity_ingest", "fetch_activity_user_activity"
VALIDATOR, EXPORTER = "validate_activity_user_activity", "load_postgres_user_activity"
PLAY_ICON = "path[d^='M8 4.13397']"  # the triangle of a block's "Run block" button
# The first step of each loop of Mage's scheduler (mage_ai.orchestration.pipeline_scheduler's
# schedule_all), alone: every pipeline's triggers.yaml into Mage's database. In the editor's
# environment, so it reaches the database the editor's web server reads.
SYNC_TRIGGERS = """
from mage_project import config
from mage_project.cli import prepare_mage_environment

prepare_mage_environment()
from mage_ai.settings.repo import set_repo_path

set_repo_path(str(config.PROJECT_ROOT))
from mage_ai.data_preparation.models.pipeline import Pipeline
from mage_ai.orchestration.db import db_connection
from mage_ai.orchestration.pipeline_scheduler import sync_schedules

db_connection.start_session()
sync_schedules(list(Pipeline.get_all_pipelines_all_projects(
    str(config.PROJECT_ROOT), disable_pipelines_folder_creation=True)))
"""

expect.set_options(timeout=60_000)


def pipelines() -> dict[str, dict]:
    return {p.parent.name: yaml.safe_load(p.read_text())
            for p in sorted((ROOT / "pipelines").glob("*/metadata.yaml"))}


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def session_files() -> list[str]:
    """The tracked files the editor session may write: the opened pipeline's and its blocks'.
    (Only these are put back: other people may be editing other files of the tree.)"""
    meta = pipelines()[PIPELINE]
    blocks = {f"{block['uuid']}.py" for block in meta["blocks"] + meta.get("callbacks", [])}
    return [path for path in git("ls-files", "--", *PROJECT_PATHS).splitlines()
            if path.startswith(f"pipelines/{PIPELINE}/") or Path(path).name in blocks]


@dataclass(frozen=True)
class ProjectState:
    # What git sees of PROJECT_PATHS: `git status --porcelain`, and `git diff`, which also
    # tells a further change to a file that was modified already.
    status: str
    diff: str
    files: dict[str, bytes]  # the bytes of session_files() in the working tree

    @classmethod
    def now(cls) -> ProjectState:
        # `git status` lists a tracked file whose size changed as modified without reading it
        # (until `git add` refreshes the index), so a rewrite the clean filter takes back out
        # still shows there; `git diff` compares the filtered content. A modified file counts
        # when its content differs.
        changed = set(git("diff", "--name-only", "--", *PROJECT_PATHS).splitlines())
        status = "".join(line for line in git("status", "--porcelain", "--", *PROJECT_PATHS)
                         .splitlines(keepends=True)
                         if not (line.startswith(" M ") and line[3:].rstrip("\n") not in changed))
        return cls(status, git("diff", "--", *PROJECT_PATHS),
                   {path: (ROOT / path).read_bytes() for path in session_files()})

    def rewritten(self) -> list[str]:
        """The session files whose bytes changed since."""
        return [path for path, data in self.files.items() if (ROOT / path).read_bytes() != data]

    def restore(self) -> None:
        for path in self.rewritten():
            (ROOT / path).write_bytes(self.files[path])


@dataclass(frozen=True)
class Editor:
    url: str
    before: ProjectState  # the project's files when the editor started
    database: dict[str, str]  # its warehouse's POSTGRES_* settings
    process: subprocess.Popen

    def stop(self) -> None:
        """Stop it as Ctrl-C or a signal to its process group does; once stopped, nothing."""
        stop_group(self.process, timeout=60)


@pytest.fixture(scope="module")
def database(pg_server):
    """The POSTGRES_* settings of a fresh database on the embedded server, for the module."""
    name = f"browser_{uuid.uuid4().hex[:12]}"
    admin = _admin(pg_server)
    with admin.cursor() as cur:
        cur.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    yield {"POSTGRES_HOST": pg_server.socket_dir, "POSTGRES_PORT": str(pg_server.port),
           "POSTGRES_USER": pg_server.user, "POSTGRES_DBNAME": name}
    with admin.cursor() as cur:
        cur.execute(sql.SQL("drop database {} with (force)").format(sql.Identifier(name)))
    admin.close()


def wait_for_status(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> dict:
    """Mage's /api/status, once it answers."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=5) as response:
                return json.load(response)["statuses"][0]
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Mage's editor did not answer on {url}/api/status; its log:\n"
                            f"{log.read_text()[-4000:]}", pytrace=False)
            time.sleep(1)


def sync_triggers(env: dict[str, str]) -> None:
    result = subprocess.run([sys.executable, "-c", SYNC_TRIGGERS], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=300)
    if result.returncode:
        pytest.fail(f"syncing triggers.yaml into Mage's database failed:\n{result.stdout[-2000:]}"
                    f"\n{result.stderr[-4000:]}", pytrace=False)


@pytest.fixture(scope="module")
def editor(database, tmp_path_factory):
    """``python -m mage_project editor`` on a free port, its web server alone, the triggers
    synced; the project's files put back after."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    tmp = tmp_path_factory.mktemp("editor")
    before = ProjectState.now()
    port = free_port()
    log = ARTIFACTS / "editor.log"
    with ActivitySimulator(token="browser-token", **SIM) as api, open(log, "w") as out:
        env = {name: value for name, value in os.environ.items() if name not in _PROJECT_VARS}
        env.update(**database, **OWNER, INSTANCE_TYPE="web_server", PROJECT_DATA_DIR=str(tmp / "data"),
                   MAGE_DATA_DIR=str(tmp / "mage"), MAGE_EDITOR_PORT=str(port),
                   ACTIVITY_API_URL=api.url, ACTIVITY_API_TOKEN="browser-token")
        # Its own process group: Mage starts workers that must stop with it.
        proc = subprocess.Popen([sys.executable, "-m", "mage_project", "editor"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            status = wait_for_status(url, proc, log)
            if status["scheduler_status"] != "stopped":
                pytest.fail(f"the editor's Mage runs its scheduler, which starts the project's "
                            f"triggers: {status}", pytrace=False)
            sync_triggers(env)
            yield Editor(url, before, database, proc)
        finally:
            stop_group(proc, timeout=60)
            # Never leave the tree dirty, whatever Mage wrote (the last tests report it), nor
            # git's index stale for the files put back (as make editor leaves it).
            before.restore()
            refresh_git_index(ROOT)


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make setup` installs Debian's chromium", pytrace=False)
    return CHROMIUM


@pytest.fixture(scope="module")
def page(chromium, editor):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        context = browser.new_context(base_url=editor.url, viewport={"width": 1440, "height": 900})
        page = context.new_page()
        page.set_default_timeout(60_000)
        yield page
        browser.close()


@pytest.fixture(autouse=True)
def screenshot(request):
    """Each browser step's page, passed or failed, as a test artifact."""
    yield
    if "page" in request.fixturenames:
        request.getfixturevalue("page").screenshot(path=ARTIFACTS / f"{request.node.name}.png")


def block_header(page, block_uuid: str):
    return page.locator(".code-block-header-sticky").filter(has_text=block_uuid)


def block(page, block_uuid: str):
    """The block's cell in the notebook: header, code, its tests' report and output (the
    outermost element that holds that block's header and no other)."""
    header = "contains(concat(' ', normalize-space(@class), ' '), ' code-block-header-sticky ')"
    return block_header(page, block_uuid).locator(
        f"xpath=ancestor::*[count(.//*[{header}]) = 1][last()]")


def run_block(page, block_uuid: str, check: str):
    """Run the block alone with its ▶ button ("Run block"); returns the line its ``@test``
    printed for the named check (mage_project.checks.require) once the run finished."""
    cell = block(page, block_uuid)
    line = cell.get_by_text(re.compile(rf"^{check} (passed|FAILED): observed "))
    block_header(page, block_uuid).locator("button").filter(has=page.locator(PLAY_ICON)).click()
    # When Mage does not count the upstream blocks as run, it asks first: alone or with them.
    alone = page.get_by_text("Execute block", exact=True)
    expect(alone.or_(line)).to_be_visible(timeout=180_000)
    if alone.is_visible():
        alone.click()
    expect(line, f"{block_uuid} printed no {check} line: it failed or hung before its @test ran "
           f"(the test's screenshot and editor.log in {ARTIFACTS})").to_be_visible(timeout=180_000)
    return line


def block_tests_passed(page, block_uuid: str) -> None:
    """Mage's report of the block's @tests: all of those in its file passed."""
    [source] = [path for folder in PROJECT_PATHS
                if (path := ROOT / folder / f"{block_uuid}.py").is_file()]
    tests = len(re.findall(r"^@test\b", source.read_text(), re.MULTILINE))
    assert tests, f"{source} declares no @test"
    expect(block(page, block_uuid).get_by_text(re.compile(r"^\d+/\d+ tests passed"))).to_have_text(
        f"{tests}/{tests} tests passed.")


def check_result(line) -> tuple[object, object]:
    """(observed, expected) of a printed mage_project.checks.CheckResult, which passed."""
    text = line.inner_text()
    found = re.fullmatch(r"(\w+) passed: observed (.*), expected (.*)", text, re.DOTALL)
    assert found, f"the block's check did not pass: {text}"
    return ast.literal_eval(found[2]), ast.literal_eval(found[3])


def output_record(page, block_uuid: str) -> dict[str, str]:
    """The block's output: the dict it returned, which Mage renders as a one-row table, as
    {column: the cell's text}."""
    table = block(page, block_uuid).get_by_role("table")
    expect(table.get_by_role("row")).to_have_count(2)  # the header row and the block's one row
    columns = table.get_by_role("columnheader").all_inner_texts()
    cells = table.get_by_role("cell").all_inner_texts()
    return dict(zip(columns[1:], cells[1:], strict=True))  # the first column numbers the rows


def save_output(page, block_uuid: str, column: str) -> None:
    """A screenshot of the block's test report and output, its table scrolled to ``column``."""
    cell = block(page, block_uuid)
    table = cell.get_by_role("table")
    # The header row follows the body's horizontal scroll (not the other way round).
    column_index = table.get_by_role("columnheader").all_inner_texts().index(column)
    table.get_by_role("cell").nth(column_index).scroll_into_view_if_needed()
    line = cell.get_by_text(re.compile(r"^\w+ passed: observed "))
    line.evaluate("line => line.scrollIntoView({block: 'end'})")
    top = cell.get_by_text(re.compile(r"^\d+/\d+ tests passed")).bounding_box()
    bottom, box = line.bounding_box(), cell.bounding_box()
    assert top and bottom and box, f"{block_uuid}'s output is not on the page"
    page.screenshot(path=ARTIFACTS / f"block-{block_uuid}.png", clip={
        "x": box["x"], "y": top["y"] - 12, "width": box["width"],
        "height": bottom["y"] + bottom["height"] - top["y"] + 24})


def test_sign_in_with_the_owner_from_the_settings(page):
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in"))
    page.get_by_placeholder("Email").fill(OWNER["DEFAULT_OWNER_EMAIL"])
    page.get_by_placeholder("Password").fill(OWNER["DEFAULT_OWNER_PASSWORD"])
    page.screenshot(path=ARTIFACTS / "sign-in-form.png")
    page.get_by_role("button", name="Sign into Mage").click()
    expect(page).to_have_url(re.compile(r"/overview"))
    expect(page.get_by_text("Pipeline run metrics")).to_be_visible()


def test_pipelines_list_shows_every_pipeline_of_the_project(page):
    expected = pipelines()
    page.goto("/pipelines")
    for name, meta in expected.items():
        row = page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row).to_contain_text(meta["description"])
    expect(page.get_by_role("row")).to_have_count(1 + len(expected))  # the header and one each


def test_pipeline_editor_shows_its_blocks(page):
    blocks = pipelines()[PIPELINE]["blocks"]
    page.goto(f"/pipelines/{PIPELINE}/edit")
    for block in blocks:
        header = block_header(page, block["uuid"])
        expect(header).to_be_visible()
        expect(header).to_contain_text(re.compile(block["type"].replace("_", " "), re.IGNORECASE))
    expect(page.locator(".code-block-header-sticky")).to_have_count(len(blocks))
    expect(page.get_by_text(f"def {LOADER}(").first).to_be_visible()  # the code, from its file


def test_running_the_loader_renders_its_manifest(page):
    yesterday = {datetime.now(UTC).date() - timedelta(days=1)}
    run = block_header(page, LOADER).locator("button").filter(has=page.locator(PLAY_ICON))
    run.hover()
    expect(page.get_by_text("Run block")).to_be_visible()
    run.click()
    check = page.get_by_text(re.compile(r"landing_files_complete (passed|failed)"))
    expect(check).to_be_visible(timeout=180_000)
    yesterday.add(datetime.now(UTC).date() - timedelta(days=1))  # in case midnight passed

    # The manifest's `files` cell is the JSON of the landing files the loader wrote.
    cell = page.get_by_text('"key": "activity/user_activity/date=')
    files = json.loads(cell.inner_text())
    keys = [re.fullmatch(r"activity/user_activity/date=([\d-]+)/[\w-]+-\d{5}\.csv", f["key"])
            for f in files]
    assert all(keys), f"landing keys not in the entity's layout: {files}"
    days = {datetime.fromisoformat(key[1]).date() for key in keys}
    assert len(days) == 1 and days <= yesterday, (
        f"the editor's run should fetch the day before today (its scheduled window): {files}")
    day = days.pop()
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    served = sum(1 for _ in generate_events(start, start + timedelta(days=1), **SIM))
    assert sum(f["rows"] for f in files) == served, files
    expect(check).to_have_text(re.compile(rf"^landing_files_complete passed: .*'rows_in_files': {served}\b"))
    cell.scroll_into_view_if_needed()
    block_tests_passed(page, LOADER)
    save_output(page, LOADER, "files")


def test_running_the_validator_accounts_for_every_landed_row(page):
    line = run_block(page, VALIDATOR, "every_landed_row_validated")
    fetched, validated = output_record(page, LOADER), output_record(page, VALIDATOR)
    assert (validated["run_id"], validated["files"]) == (fetched["run_id"], fetched["files"]), (
        "the validator should take the loader's manifest, the landing files of the same run")
    landed = json.loads(validated["files"])
    files = json.loads(validated["validated"])
    assert [f["key"] for f in files] == [f["key"] for f in landed], files
    for file, source in zip(files, landed, strict=True):
        assert file["valid"] + file["rejected"] == file["rows"] == source["rows"], file
    rows_fetched = int(fetched["rows_fetched"])
    rows_valid, rows_rejected = int(validated["rows_valid"]), int(validated["rows_rejected"])
    assert (rows_valid, rows_rejected) == (sum(f["valid"] for f in files),
                                           sum(f["rejected"] for f in files)), validated
    assert rows_valid + rows_rejected == rows_fetched, validated

    # The simulator's defects, told by an oracle independent of mage_project.validation.
    start, end = (datetime.fromisoformat(validated[k]) for k in ("window_start", "window_end"))
    _, rejected, served = expected_rows(start, end)
    assert (rows_fetched, rows_rejected) == (served, rejected) and rejected > 0, (
        f"[{start}, {end}) served {served} events, {rejected} of them invalid: {validated}")

    observed, expected = check_result(line)
    assert observed == expected == {f["key"]: f["rows"] for f in landed}, line.inner_text()
    block_tests_passed(page, VALIDATOR)
    save_output(page, VALIDATOR, "validated")


def test_running_the_exporter_loads_the_warehouse(page, editor):
    line = run_block(page, EXPORTER, "load_reconciles")
    validated, summary = output_record(page, VALIDATOR), output_record(page, EXPORTER)
    assert summary["status"] == "success", summary
    assert (summary["run_id"], summary["window_start"], summary["window_end"]) == (
        validated["run_id"], validated["window_start"], validated["window_end"]), summary
    counts = {name: int(summary[name]) for name in
              ("rows_fetched", "rows_loaded", "rows_rejected", "rows_duplicate")}
    start, end = (datetime.fromisoformat(summary[k]) for k in ("window_start", "window_end"))
    rows, rejected, served = expected_rows(start, end)
    assert counts == {"rows_fetched": served, "rows_loaded": len(rows), "rows_rejected": rejected,
                      "rows_duplicate": served - rejected - len(rows)}, (
        f"[{start}, {end}): {served} events served, {len(rows)} distinct valid, {rejected} "
        f"invalid; the exporter's summary: {summary}")
    assert counts["rows_rejected"] == int(validated["rows_rejected"]), (summary, validated)
    assert counts["rows_loaded"] + counts["rows_rejected"] + counts["rows_duplicate"] == (
        counts["rows_fetched"]), summary

    observed, expected = check_result(line)
    assert observed == expected == {"status": "success", "accounted": served}, line.inner_text()
    block_tests_passed(page, EXPORTER)
    save_output(page, EXPORTER, "rows_loaded")

    # The warehouse holds the window's valid events, each once, and nothing else: no trigger
    # ran beside the notebook.
    settings = editor.database
    conn = psycopg2.connect(host=settings["POSTGRES_HOST"], port=settings["POSTGRES_PORT"],
                            user=settings["POSTGRES_USER"], dbname=settings["POSTGRES_DBNAME"])
    try:
        with conn.cursor() as cur:
            cur.execute("select event_id from raw.user_activity"
                        " where occurred_at >= %s and occurred_at < %s", (start, end))
            loaded = [event_id for (event_id,) in cur.fetchall()]
            cur.execute("select count(*) from raw.user_activity")
            [(total,)] = cur.fetchall()
            cur.execute("select run_id, status, rows_loaded from ops.pipeline_runs")
            runs = cur.fetchall()
    finally:
        conn.close()
    assert len(loaded) == len(set(loaded)) == counts["rows_loaded"], (
        f"raw.user_activity holds {len(loaded)} rows ({len(set(loaded))} distinct events) in "
        f"[{start}, {end}), where the exporter loaded {counts['rows_loaded']}")
    assert set(loaded) == set(rows), "raw.user_activity's events are not the window's valid ones"
    assert total == len(loaded), f"raw.user_activity holds {total - len(loaded)} rows outside the window"
    assert runs == [(summary["run_id"], "success", counts["rows_loaded"])], (
        f"ops.pipeline_runs should hold the notebook's run alone: {runs}")


def test_triggers_page_shows_the_pipelines_trigger(page):
    triggers = yaml.safe_load((ROOT / "pipelines" / PIPELINE / "triggers.yaml").read_text())
    page.goto(f"/pipelines/{PIPELINE}/triggers")
    for trigger in triggers["triggers"]:
        row = page.get_by_role("row").filter(has_text=trigger["name"])
        expect(row).to_contain_text(trigger["schedule_interval"])
        expect(row).to_contain_text(trigger["description"])
    expect(page.get_by_role("row")).to_have_count(1 + len(triggers["triggers"]))


def test_editor_session_leaves_the_committed_files_clean(editor):
    assert git("config", "--default", "", "--get", "filter.mage-pipeline-state.clean").strip(), (
        "git has no clean filter for pipelines/*/metadata.yaml (.gitattributes): run `make setup`")
    after, rewritten = ProjectState.now(), editor.before.rewritten()
    assert (after.status, after.diff) == (editor.before.status, editor.before.diff), (
        f"the editor session changed what git sees of the project's files (Mage rewrote "
        f"{rewritten}):\n{after.status}\n{after.diff[-4000:]}")


def test_stopping_the_editor_leaves_git_status_as_it_was(editor):
    """When Mage stops, ``make editor`` refreshes git's index (pipeline_metadata.refresh_git_index),
    so `git status` no longer lists the metadata.yaml files Mage rewrote without a change git
    keeps (the clean filter takes their editor state out). Stops the editor: the last step."""
    rewritten = [path for path in editor.before.rewritten() if path.endswith("/metadata.yaml")]
    assert rewritten, "Mage rewrote no pipeline's metadata.yaml: the session ran no block"
    editor.stop()
    status = git("status", "--porcelain", "--", *rewritten)
    before = "".join(line for line in editor.before.status.splitlines(keepends=True)
                     if line[3:].rstrip("\n") in rewritten)
    assert status == before, (
        f"after the editor stopped, `git status` lists what it did not before the session (the "
        f"clean filter is registered by `make setup`):\n{status}{git('diff', '--', *rewritten)}")
