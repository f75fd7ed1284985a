"""Mage's editor in a real browser: sign in, the pipelines, a pipeline's blocks, every block of
``user_activity_ingest`` run from the notebook in pipeline order (each output checked against the
simulator's events and the warehouse), the triggers; every block of ``warehouse_elt`` run from the
notebook in pipeline order, its sensor, file loads, quality gate, plan, Mage's dbt block and the
publish (each output checked against the file drops the test landed and the warehouse); and the
session leaves the project's committed files as they were, in git's status too once the editor
stopped.

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
import csv
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import psycopg2
import pytest
import yaml
from conftest import _PROJECT_VARS, ROOT, _admin
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import expect, sync_playwright
from psycopg2 import sql
from support import SIM, expected_rows, free_port, stop_group

from mage_project import contracts
from mage_project.entities import FILE_ENTITIES
from mage_project.landing import LandingZone
from mage_project.pipeline_metadata import committed_form, refresh_git_index
from mage_project.sources.activity_simulator import ActivitySimulator, generate_events
from mage_project.sources.file_drops import write_drops

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
                 "data_exporters", "callbacks", "sensors", "conditionals", "dbt")
PIPELINE, LOADER = "user_activity_ingest", "fetch_activity_user_activity"
VALIDATOR, EXPORTER = "validate_activity_user_activity", "load_postgres_user_activity"
ELT, SENSOR, FILE_LOADER = "warehouse_elt", "detect_landing_file_drops", "load_landing_file_drops"
GATE, PLAN = "check_raw_quality_file_drops", "plan_marts_build"
DBT_BLOCK, PUBLISH = "build_dbt_warehouse", "publish_marts"
DROP_DAYS = (date(2026, 11, 1), date(2026, 11, 3))  # the file drops the ELT tests land: [start, end)
DBT_MODELS = ROOT / "dbt" / "warehouse" / "models"
PLAY_ICON = "path[d^='M8 4.13397']"  # the triangle of a block's "Run block" button
# The first step of each loop of Mage's scheduler (mage_ai.orchestration.pipeline_scheduler's
# schedule_all), alone: every pipeline's triggers.yaml into Mage's database. In the editor's
# environment, so it reaches the database the editor's web server reads.
SYNC_TRIGGERS = """
from mage_project import config
from mage_project.runner import prepare_mage_environment

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
    """The tracked files the editor session may write: the opened pipelines' and their blocks',
    and the dbt sources Mage keeps for the Python blocks upstream of a dbt block."""
    files = {"dbt/warehouse/models/mage_sources.yml"}
    for name in (PIPELINE, ELT):
        meta = pipelines()[name]
        for block in (meta["blocks"] + (meta.get("callbacks") or [])
                      + (meta.get("conditionals") or [])):
            files.add((block.get("configuration") or {}).get("file_path")
                      or f"{block['uuid']}.py")
    return [path for path in git("ls-files", "--", *PROJECT_PATHS).splitlines()
            if path.startswith((f"pipelines/{PIPELINE}/", f"pipelines/{ELT}/"))
            or path in files or Path(path).name in files]


def same_pipeline(text: str, other: str) -> bool:
    """Whether two metadata.yaml texts hold the same pipeline once the editor's state is out."""
    return yaml.safe_load(committed_form(text)) == yaml.safe_load(committed_form(other))


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
        """Put back each pipeline's metadata.yaml whose only change is the editor's session state
        (what the clean filter takes out): that loses nobody's edit. Any other change stays,
        whoever made it: the files are other people's too, and their edits must survive a test
        run (a change Mage made is what the last tests report)."""
        for path in self.rewritten():
            if path.endswith("/metadata.yaml") and same_pipeline(
                    (ROOT / path).read_text(), self.files[path].decode()):
                (ROOT / path).write_bytes(self.files[path])


@dataclass(frozen=True)
class Editor:
    url: str
    before: ProjectState  # the project's files when the editor started
    database: dict[str, str]  # its warehouse's POSTGRES_* settings
    process: subprocess.Popen
    data_dir: Path  # its PROJECT_DATA_DIR
    landing: Path  # the folder of its LANDING_URL, the module's own

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
    data, landing = tmp / "data", tmp / "landing"
    with ActivitySimulator(token="browser-token", **SIM) as api, open(log, "w") as out:
        env = {name: value for name, value in os.environ.items() if name not in _PROJECT_VARS}
        env.update(**database, **OWNER, INSTANCE_TYPE="web_server", PROJECT_DATA_DIR=str(data),
                   MAGE_DATA_DIR=str(tmp / "mage"), MAGE_EDITOR_PORT=str(port),
                   LANDING_URL=landing.as_uri(), ACTIVITY_API_URL=api.url,
                   ACTIVITY_API_TOKEN="browser-token")
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
            yield Editor(url, before, database, proc, data, landing)
        finally:
            stop_group(proc, timeout=60)
            # Put back the editor state Mage wrote (the last tests report anything else), and
            # refresh git's index for the files put back (as make editor does).
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
        # Mage's notebook may tell that its kernel restarted when editor.log shows none (it
        # compares the kernel's pid between polls), in a dialog over the page: closed wherever
        # it shows, as a user would.
        restarted = page.get_by_text("The kernel has restarted", exact=True)
        page.add_locator_handler(restarted, lambda: restarted.locator(
            "xpath=ancestor::div[.//button][1]").get_by_role("button", name="Close").click())
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


def output_lines(page, block_uuid: str):
    """The lines of the block's output (what it printed and logged, an error), not its code."""
    return block(page, block_uuid).locator("code")


class Rerendered(Exception):
    """An element the test was acting on was replaced (or not laid out) meanwhile."""


def on_fresh_elements(action, timeout: float = 60):
    """``action()``, called again while Mage re-renders what it acts on, up to ``timeout`` s.

    Mage's notebook re-renders a block's output after the block ran (it fetches the pipeline and
    the block's outputs again, and redraws them), replacing the elements: an action on an element
    found a moment before may meet it detached ("Element is not attached to the DOM") or without
    a box. ``action`` locates everything it touches on each call and starts by waiting for it
    (``expect``, ``box``), so each attempt acts on the page as it is then. An assertion that
    fails (``expect``) is not retried."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (PlaywrightError, Rerendered):
            if time.monotonic() >= deadline:
                raise


def box(locator) -> dict:
    """The element's box once it is visible; Rerendered when it was replaced meanwhile."""
    expect(locator).to_be_visible()
    found = locator.bounding_box()
    if found is None:
        raise Rerendered(f"{locator} has no box: it was re-rendered")
    return found


def scroll_into_view(locator) -> None:
    expect(locator).to_be_visible()
    locator.scroll_into_view_if_needed()


def execute(page, block_uuid: str, finished, timeout: float = 180_000) -> None:
    """Run the block alone with the button of its header (Python blocks: ▶ "Run block"; dbt
    blocks: "Run command") and wait for ``finished``, a locator of what it shows when done.
    Fails with Mage's error when the block raised."""
    header = block_header(page, block_uuid)
    header.locator("button").filter(has=page.locator(PLAY_ICON)).or_(
        header.get_by_role("button", name="Run command")).click()
    # When Mage does not count the upstream blocks as run, it asks first: alone or with them.
    alone = page.get_by_text("Execute block", exact=True)
    error = output_lines(page, block_uuid).filter(has_text="Traceback (most recent call last)")
    expect(alone.or_(finished).or_(error).first).to_be_visible(timeout=timeout)
    if alone.is_visible():
        alone.click()
    expect(finished.or_(error).first).to_be_visible(timeout=timeout)
    if error.count():
        shown = "\n".join(output_lines(page, block_uuid).all_inner_texts())
        pytest.fail(f"running {block_uuid} in the notebook failed; Mage shows:\n{shown[-6000:]}",
                    pytrace=False)
    expect(finished, f"{block_uuid} did not finish: its screenshot and editor.log in "
           f"{ARTIFACTS}").to_be_visible(timeout=timeout)


def run_block(page, block_uuid: str, check: str):
    """Run the block alone (``execute``); returns the line its ``@test`` printed for the named
    check (mage_project.checks.require) once the run finished."""
    line = block(page, block_uuid).get_by_text(re.compile(rf"^{check} (passed|FAILED): observed "))
    execute(page, block_uuid, line)
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

    def read() -> dict[str, str]:
        columns = table.get_by_role("columnheader").all_inner_texts()
        cells = table.get_by_role("cell").all_inner_texts()
        if len(columns) < 2 or len(cells) != len(columns):  # read while Mage redrew it
            raise Rerendered(f"{block_uuid}'s table: columns {columns}, cells {cells}")
        return dict(zip(columns[1:], cells[1:], strict=True))  # the first column numbers the rows

    return on_fresh_elements(read)


def save_output(page, block_uuid: str, column: str) -> None:
    """A screenshot of the block's test report and output, its table scrolled to ``column``
    (found afresh while Mage redraws them: ``on_fresh_elements``)."""

    def shoot() -> None:
        cell = block(page, block_uuid)
        table = cell.get_by_role("table")
        headers = table.get_by_role("columnheader")
        expect(headers.filter(has_text=re.compile(rf"^{re.escape(column)}$"))).to_have_count(1)
        names = headers.all_inner_texts()
        if column not in names:
            raise Rerendered(f"{block_uuid}'s table was redrawn: columns {names}")
        # The header row follows the body's horizontal scroll (not the other way round).
        scroll_into_view(table.get_by_role("cell").nth(names.index(column)))
        line = cell.get_by_text(re.compile(r"^\w+ passed: observed ")).last
        # Warnings Mage's kernel prints (scikit-learn's, on each output) may push the check's line
        # a screen below the table: then the picture ends with the table ("1 row x 5 columns").
        size = cell.get_by_text(re.compile(r"^\d+ rows? x \d+ columns?$"))
        gap = box(line)["y"] - box(size)["y"]  # both from the viewport's top
        end = line if gap < 200 else size
        end.evaluate("end => end.scrollIntoView({block: 'end'})")
        top = box(cell.get_by_text(re.compile(r"^\d+/\d+ tests passed")))
        bottom, whole = box(end), box(cell)
        page.screenshot(path=ARTIFACTS / f"block-{block_uuid}.png", clip={
            "x": whole["x"], "y": top["y"] - 12, "width": whole["width"],
            "height": bottom["y"] + bottom["height"] - top["y"] + 24})

    on_fresh_elements(shoot)


def query(editor: Editor, statement: str, params=None) -> list[tuple]:
    """Rows of a query on the editor's warehouse."""
    settings = editor.database
    conn = psycopg2.connect(host=settings["POSTGRES_HOST"], port=settings["POSTGRES_PORT"],
                            user=settings["POSTGRES_USER"], dbname=settings["POSTGRES_DBNAME"])
    try:
        with conn.cursor() as cur:
            cur.execute(statement, params)
            return cur.fetchall()
    finally:
        conn.close()


def save_log(page, block_uuid: str, last_line) -> None:
    """A screenshot of the block's header and the end of its log, down to ``last_line`` (a
    locator, found afresh while Mage redraws the log: ``on_fresh_elements``)."""

    def shoot() -> None:
        expect(last_line).to_be_visible()
        last_line.evaluate("line => line.scrollIntoView({block: 'end'})")
        header, bottom = box(block_header(page, block_uuid)), box(last_line)
        whole = box(block(page, block_uuid))
        page.screenshot(path=ARTIFACTS / f"block-{block_uuid}.png", clip={
            "x": whole["x"], "y": header["y"], "width": whole["width"],
            "height": bottom["y"] + bottom["height"] - header["y"] + 12})

    on_fresh_elements(shoot)


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
    on_fresh_elements(lambda: scroll_into_view(cell))
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


def landed_rows(editor: Editor) -> dict[str, list[dict]]:
    """Every file drop in the editor's landing folder, read back with the csv module (not the
    project's loader): {key: its rows}, in key order."""
    rows = {}
    for prefix in FILE_ENTITIES:
        for path in sorted((editor.landing / prefix).glob("*/*.csv")):
            with open(path, newline="", encoding="utf-8") as handle:
                rows[path.relative_to(editor.landing).as_posix()] = list(csv.DictReader(handle))
    return dict(sorted(rows.items()))


def entity_rows(landed: dict[str, list[dict]], prefix: str) -> list[dict]:
    """The rows of the entity's files, by file date, then name, then row (the order they apply in)."""
    return [row for key in sorted(landed) if key.startswith(f"{prefix}/") for row in landed[key]]


def expected_daily_revenue(landed: dict[str, list[dict]]) -> list[tuple]:
    """marts.fct_daily_revenue told from the payment files alone: each payment's latest version
    (latest updated_at; on a tie the later file), those succeeded or refunded, per UTC date of
    paid_at: (date, gross, refunds, net, paying customers), by date."""
    latest: dict[str, dict] = {}
    for row in entity_rows(landed, "billing/payments"):
        seen = latest.get(row["payment_id"])
        if seen is None or (datetime.fromisoformat(row["updated_at"])
                            >= datetime.fromisoformat(seen["updated_at"])):
            latest[row["payment_id"]] = row
    days: dict = defaultdict(lambda: {"gross": Decimal(0), "refunds": Decimal(0), "payers": set()})
    for row in latest.values():
        if row["status"] not in ("succeeded", "refunded"):
            continue
        day = days[datetime.fromisoformat(row["paid_at"]).astimezone(UTC).date()]
        day["gross"] += Decimal(row["amount"])
        if row["status"] == "refunded":
            day["refunds"] += Decimal(row["amount"])
        else:
            day["payers"].add(int(row["customer_id"]))
    return [(d, v["gross"], v["refunds"], v["gross"] - v["refunds"], len(v["payers"]))
            for d, v in sorted(days.items())]


def expected_campaign_spend(landed: dict[str, list[dict]]) -> dict[tuple, Decimal]:
    """Ad spend per (date, campaign) told from the ad spend files alone: a (date, campaign,
    channel) row of a later file replaces the earlier one; channels summed."""
    latest = {(r["date"], r["campaign"], r["channel"]): Decimal(r["spend"])
              for r in entity_rows(landed, "marketing/ad_spend")}
    spend: dict[tuple, Decimal] = defaultdict(Decimal)
    for (day, campaign, _channel), amount in latest.items():
        spend[(date.fromisoformat(day), campaign)] += amount
    return dict(spend)


def dbt_log(page) -> str:
    """What Mage shows of the dbt block's run: the dbt commands it ran and dbt's log."""
    return "\n".join(output_lines(page, DBT_BLOCK).all_inner_texts())


def dbt_found(log: str) -> dict[str, int]:
    """What dbt's log says it found in the project: models, operations (hooks), data tests."""
    found = re.search(r"Found (\d+) models?, (\d+) operations?, (\d+) data tests?", log)
    assert found, f"dbt's log names no project it found:\n{log[-3000:]}"
    return {"models": int(found[1]), "operations": int(found[2]), "tests": int(found[3])}


def shown_path(editor: Editor, path: Path) -> set[str]:
    """How the notebook may show a path under the editor's data dir: Mage hides every environment
    value of 8 characters or more in what it prints (mage_ai.shared.security), the data dir too."""
    data = str(editor.data_dir)
    return {str(path), str(path).replace(data, "*" * len(data))}


def test_elt_notebook_shows_its_blocks_in_pipeline_order(page):
    blocks = pipelines()[ELT]["blocks"]
    page.goto(f"/pipelines/{ELT}/edit")
    headers = page.locator(".code-block-header-sticky")
    expect(headers).to_have_count(len(blocks))
    expect(headers).to_contain_text([meta["uuid"] for meta in blocks])  # in this order
    for meta in blocks:
        expect(block_header(page, meta["uuid"])).to_contain_text(
            re.compile(meta["type"].replace("_", " "), re.IGNORECASE))
    # The dbt block's command is its file: the arguments its upstream block plans.
    [dbt] = [meta for meta in blocks if meta["uuid"] == DBT_BLOCK]
    command = (ROOT / dbt["configuration"]["file_path"]).read_text().strip()
    assert command.startswith(f"{{{{ block_output('{PLAN}'"), command
    expect(block(page, DBT_BLOCK).get_by_text(command)).to_be_visible()


def test_elt_sensor_answers_whether_file_drops_wait(page, editor):
    """In the notebook the sensor runs once and shows its answer (a pipeline run asks again every
    minute while it is False): False while no file drop is new, True once some landed."""
    assert pipelines()[ELT]["variables"]["wait_for_files"] is True, (
        "the pipeline's sensor no longer waits for new files: this test checks that it does")
    answer = output_lines(page, SENSOR).get_by_text(re.compile(r"^(True|False)$"))
    execute(page, SENSOR, answer)
    expect(answer).to_have_text("False")
    page.screenshot(path=ARTIFACTS / "elt-sensor-before-the-drops.png")

    keys = write_drops(LandingZone(editor.landing.as_uri()), *DROP_DAYS)
    assert sorted(keys) == list(landed_rows(editor)), keys
    try:
        execute(page, SENSOR, answer.filter(has_text="True"), timeout=60_000)
    except AssertionError:
        pytest.fail(f"with {len(keys)} new file drops the sensor answers "
                    f"{answer.all_inner_texts()}, not True", pytrace=False)


def test_running_the_elt_loader_loads_each_landed_file_once(page, editor):
    line = run_block(page, FILE_LOADER, "file_loads_reconcile")
    summary = output_record(page, FILE_LOADER)
    landed = landed_rows(editor)
    files = json.loads(summary["files"])
    assert sorted(f["key"] for f in files) == list(landed), (
        f"the loader should load each landed file once: {[f['key'] for f in files]}")
    for file in files:
        rows = len(landed[file["key"]])
        assert (file["status"], file["version"], file["rows"], file["rows_loaded"],
                file["rows_rejected"]) == ("loaded", 1, rows, rows, 0), (
            f"{file['key']} holds {rows} valid rows: {file}")
    assert (summary["pipeline"], summary["loaded"], summary["skipped"], summary["failed"]) == (
        ELT, str(len(landed)), "0", "0"), summary
    observed, expected = check_result(line)
    assert observed == expected == {"unaccounted": []}, line.inner_text()
    block_tests_passed(page, FILE_LOADER)
    save_output(page, FILE_LOADER, "files")

    # Each raw table holds its files' rows, each file is one version in the manifest.
    for prefix, entity in FILE_ENTITIES.items():
        [(count,)] = query(editor, sql.SQL("select count(*) from {}").format(
            sql.Identifier(entity.schema, entity.table)))
        assert count == len(entity_rows(landed, prefix)), (
            f"{entity.schema}.{entity.table} holds {count} rows, its files "
            f"{len(entity_rows(landed, prefix))}")
    assert query(editor, "select count(*) from raw.load_rejects") == [(0,)]
    assert query(editor, "select file_key, version, status, rows_total, rows_loaded, run_id"
                         " from ops.file_manifest order by file_key collate \"C\"") == [
        (key, 1, "loaded", len(rows), len(rows), summary["run_id"]) for key, rows in landed.items()]
    # Each file's rows were held to its raw table's contract in its load (columns, required and
    # unique: mage_project.enforcement.check_loaded), every check stored with the load's run.
    columns = {prefix: contracts.raw_table(entity.qualified_name)[1].columns
               for prefix, entity in FILE_ENTITIES.items()}
    loads = sum(1 + sum(c.required + c.unique for c in columns[key.rsplit("/", 2)[0]]) for key in landed)
    assert query(editor, "select check_kind, count(*), bool_and(passed) from ops.quality_results"
                         " where run_id = %s group by 1", (summary["run_id"],)) == [("contract", loads, True)]


def test_running_the_quality_gate_passes_every_expectation(page, editor):
    line = run_block(page, GATE, "raw_quality_passed")
    gate = output_record(page, GATE)
    files = len(json.loads(output_record(page, FILE_LOADER)["files"]))
    # One result per check the raw contracts give the gate: each entity's expectations, the rules
    # measured in the warehouse.
    expectations = sum(len(entity.expectations) for entity in FILE_ENTITIES.values())
    rules = sum(1 for e in FILE_ENTITIES.values() for r in contracts.raw_table(e.qualified_name)[1].quality
                if r.great_expectation is None)
    checks = expectations + rules
    assert {name: gate[name] for name in ("file_versions", "checks", "passed", "stored",
                                          "failed_error", "failed_warn")} == {
        "file_versions": str(files), "checks": str(checks), "passed": str(checks),
        "stored": str(checks), "failed_error": "[]", "failed_warn": "[]"}, gate
    observed, expected = check_result(line)
    assert observed == expected == {"failed_error": [], "stored": checks}, line.inner_text()
    block_tests_passed(page, GATE)
    save_output(page, GATE, "passed")

    assert query(editor, "select check_kind, count(*), bool_and(passed) from ops.quality_results"
                         " where run_id = %s group by 1 order by 1", (gate["run_id"],)) == [
        ("contract", rules, True), ("great_expectations", expectations, True)]
    assert query(editor, "select quality_status, count(*) from ops.file_manifest group by 1") == [
        ("passed", files)]


def test_planning_the_build_names_an_audit_build_in_a_target_path_of_its_own(page, editor):
    line = run_block(page, PLAN, "marts_build_planned")
    plan = output_record(page, PLAN)
    assert plan["up_to_date"] == "False", f"nothing is published in this database yet: {plan}"
    # The build belongs to the editor session's run: that of the kernel Mage runs the notebook's
    # blocks in (runs.run_id_for), so the dbt block, the publish and a failure callback name it.
    session = re.fullmatch(r"editor-(\d+)-[0-9a-f]{8}", plan["run_id"])
    assert session, f"the notebook's build is not its session's run: {plan}"
    kernel = Path(f"/proc/{session[1]}/cmdline").read_bytes().split(b"\0")
    assert any(b"ipykernel" in arg for arg in kernel), (
        f"process {session[1]} is not Mage's kernel: {kernel}")
    target = editor.data_dir / "work" / "dbt-runs" / plan["run_id"]
    assert plan["target_path"] in shown_path(editor, target), plan
    args = shlex.split(plan["dbt_args"])
    assert len(args) == 4 and args[:3] == ["--target-path", plan["target_path"], "--vars"], args
    assert json.loads(args[3]) == {"audit": True}, args
    observed, _ = check_result(line)
    assert observed == {"up_to_date": False, "audit": True, "own_target_path": True}, observed
    block_tests_passed(page, PLAN)
    save_output(page, PLAN, "dbt_args")

    # The plan holds the marts' build lease, and nothing is published yet.
    assert query(editor, "select name, run_id from ops.build_leases") == [
        (f"{ELT}:marts", plan["run_id"])]
    assert query(editor, "select count(*) from ops.marts_publications") == [(0,)]


def test_running_mages_dbt_block_builds_and_tests_the_marts_in_the_audit_schema(page, editor):
    plan = output_record(page, PLAN)
    done = output_lines(page, DBT_BLOCK).get_by_text(
        re.compile(r"\d\d:\d\d:\d\d\s+Done\. PASS=\d+"))
    execute(page, DBT_BLOCK, done, timeout=300_000)
    log = dbt_log(page)

    # Mage ran `dbt deps`, then `dbt build` with the plan's arguments.
    deps, build = log.find("dbt deps \\"), log.find("dbt build \\")
    assert 0 <= deps < build, f"Mage should run dbt deps, then dbt build:\n{log[:3000]}"
    command = log[build:log.index("--profiles-dir", build)]
    assert f"--target-path {plan['target_path']}" in command and '"audit": true' in command, (
        f"dbt build did not get the plan's arguments {plan['dbt_args']}:\n{command}")

    # dbt found the project's models, and built and tested all of them.
    models = len(list(DBT_MODELS.rglob("*.sql")))
    found = dbt_found(log)
    assert found["models"] == models, found
    assert "Completed successfully" in log, log[-3000:]
    total = models + found["operations"] + found["tests"]
    summary = re.search(r"Done\. PASS=(\d+) WARN=(\d+) ERROR=(\d+) SKIP=(\d+) NO-OP=(\d+)"
                        r" TOTAL=(\d+)", log)
    assert summary and [int(n) for n in summary.groups()] == [total, 0, 0, 0, 0, total], (
        f"dbt should pass {models} models, {found['operations']} hook(s) and {found['tests']} "
        f"tests: {summary and summary[0]}")
    # dbt's own record of the build, in the plan's target path.
    results = json.loads((editor.data_dir / "work" / "dbt-runs" / plan["run_id"] /
                          "run_results.json").read_text())["results"]
    kinds = defaultdict(list)
    for result in results:
        kinds[result["unique_id"].split(".", 1)[0]].append(result["status"])
    assert {kind: len(statuses) for kind, statuses in kinds.items() if kind != "operation"} == {
        "model": models, "test": found["tests"]}, kinds
    assert len(results) == total, f"run_results.json holds {len(results)} results: {kinds}"
    assert {status for statuses in kinds.values() for status in statuses} <= {"success", "pass"}, (
        kinds)
    save_log(page, DBT_BLOCK, done)

    # Write-audit-publish: the marts were built into the audit schema, none published yet.
    marts = sorted(path.stem for path in (DBT_MODELS / "marts").glob("*.sql"))
    assert query(editor, "select table_name from information_schema.tables"
                         " where table_schema = 'marts__audit' order by 1") == [(m,) for m in marts]
    assert query(editor, "select count(*) from information_schema.tables"
                         " where table_schema = 'marts'") == [(0,)]


def test_publishing_swaps_the_audited_marts_in(page, editor):
    plan, found = output_record(page, PLAN), dbt_found(dbt_log(page))
    models = len(list(DBT_MODELS.rglob("*.sql")))
    line = run_block(page, PUBLISH, "marts_published")
    published = output_record(page, PUBLISH)
    assert published["published"] == "True", published
    assert (int(published["models"]), int(published["tests"])) == (models, found["tests"]), published
    assert json.loads(published["statuses"]) == {"success": models + found["operations"],
                                                 "pass": found["tests"]}, published
    # Beside the dbt tests, the contracts' checks of the published tables (mage_project.enforcement):
    # one per table's columns, required, unique and pii column, and quality rule.
    promises = sum(1 + sum(c.required + c.unique + (c.classification == "pii") for c in t.columns)
                   + len(t.quality) for p in contracts.load_products() for t in p.tables
                   if t.schema == "marts")
    checks = found["tests"] + promises
    assert json.loads(published["quality"]) == {"checks": checks, "passed": checks,
                                                "failed_error": [], "failed_warn": []}, published
    observed, _ = check_result(line)
    assert observed == {"published": True, "up_to_date": None}, line.inner_text()
    observed, _ = check_result(block(page, PUBLISH).get_by_text(
        re.compile(r"^dbt_build_passed (passed|FAILED): observed ")))
    assert observed == {"models": models, "not_passed": {}}, observed
    block_tests_passed(page, PUBLISH)
    save_output(page, PUBLISH, "published")

    # The marts are published, once, from the plan's build; its lease and artifacts are gone.
    marts = sorted(path.stem for path in (DBT_MODELS / "marts").glob("*.sql"))
    assert query(editor, "select table_name from information_schema.tables"
                         " where table_schema = 'marts' order by 1") == [(m,) for m in marts]
    assert query(editor, "select count(*) from information_schema.tables"
                         " where table_schema = 'marts__audit'") == [(0,)]
    assert query(editor, "select run_id, inputs_fingerprint from ops.marts_publications") == [
        (plan["run_id"], plan["inputs_fingerprint"])]
    assert query(editor, "select run_id from ops.build_leases") == [(None,)]
    assert query(editor, "select check_kind, count(*), bool_and(passed) from ops.quality_results"
                         " where run_id = %s group by 1 order by 1", (plan["run_id"],)) == [
        ("contract", promises, True), ("dbt_test", found["tests"], True)]
    assert not (editor.data_dir / "work" / "dbt-runs" / plan["run_id"]).exists()

    # The marts hold what the landed files say.
    landed = landed_rows(editor)
    revenue = query(editor, "select date, gross_revenue, refunds, net_revenue, paying_customers"
                            " from marts.fct_daily_revenue order by date")
    assert revenue and revenue == expected_daily_revenue(landed), revenue
    customers = {row["customer_id"] for row in entity_rows(landed, "crm/customers")}
    assert query(editor, "select count(*) from marts.dim_customers") == [(len(customers),)]
    spend = dict(((day, campaign), amount) for day, campaign, amount in query(
        editor, "select date, campaign, spend from marts.fct_campaign_performance where spend <> 0"))
    assert spend and spend == expected_campaign_spend(landed), spend
    # The daily active users of the events the ingest loaded earlier in this module, if any.
    assert query(editor, "select date from marts.fct_daily_active_users order by 1") == query(
        editor, "select distinct (occurred_at at time zone 'UTC')::date from raw.user_activity"
                " order by 1")


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
