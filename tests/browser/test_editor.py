"""Mage's editor in a real browser: sign in, the pipelines, a pipeline's blocks, a block run
from the notebook, the triggers; and the session leaves the project's committed files as they were.

One editor (``python -m mage_project editor``, what ``make editor`` starts: Mage's web server and
scheduler) serves the module, on a fresh database of the embedded PostgreSQL and the activity API
simulator, with Mage's state in temporary directories. One signed-in page walks through the
steps in file order. Each step's screenshot and Mage's log are kept in ARTIFACTS.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from conftest import _PROJECT_VARS, ROOT, _admin
from playwright.sync_api import expect, sync_playwright
from psycopg2 import sql
from support import SIM, free_port

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
PLAY_ICON = "path[d^='M8 4.13397']"  # the triangle of a block's "Run block" button

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
        return cls(git("status", "--porcelain", "--", *PROJECT_PATHS),
                   git("diff", "--", *PROJECT_PATHS),
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


def wait_for_status(url: str, proc: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/status", timeout=5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"Mage's editor did not answer on {url}/api/status; its log:\n"
                            f"{log.read_text()[-4000:]}", pytrace=False)
            time.sleep(1)


@pytest.fixture(scope="module")
def editor(database, tmp_path_factory):
    """``python -m mage_project editor`` on a free port; the project's files put back after."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    tmp = tmp_path_factory.mktemp("editor")
    before = ProjectState.now()
    port = free_port()
    log = ARTIFACTS / "editor.log"
    with ActivitySimulator(token="browser-token", **SIM) as api, open(log, "w") as out:
        env = {name: value for name, value in os.environ.items() if name not in _PROJECT_VARS}
        env.update(**database, **OWNER, PROJECT_DATA_DIR=str(tmp / "data"),
                   MAGE_DATA_DIR=str(tmp / "mage"), MAGE_EDITOR_PORT=str(port),
                   ACTIVITY_API_URL=api.url, ACTIVITY_API_TOKEN="browser-token")
        # Its own process group: Mage starts workers that must stop with it.
        proc = subprocess.Popen([sys.executable, "-m", "mage_project", "editor"], cwd=ROOT,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            url = f"http://127.0.0.1:{port}"
            wait_for_status(url, proc, log)
            yield Editor(url, before)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            # Never leave the tree dirty, whatever Mage wrote (the last test reports it).
            before.restore()


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
