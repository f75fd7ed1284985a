"""The clean filter keeps the editor's session state out of pipelines/*/metadata.yaml in git."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mage_project.pipeline_metadata import committed_form, refresh_git_index

ROOT = Path(__file__).resolve().parents[2]
METADATA = sorted((ROOT / "pipelines").glob("*/metadata.yaml"))


def committed_text(path: Path) -> str:
    """The file as git keeps it (the working file may hold an open editor session's state)."""
    shown = subprocess.run(["git", "show", f":{path.relative_to(ROOT)}"], cwd=ROOT,
                           capture_output=True, text=True, check=False)
    return shown.stdout if shown.returncode == 0 else path.read_text()


def after_an_editor_session(text: str) -> str:
    """What Mage 0.9.80 writes after the editor ran the first block (seen in a real session)."""
    meta = yaml.safe_load(text)
    meta["blocks"][0]["status"] = "executed"
    for block in meta["blocks"][1:] + meta["callbacks"]:
        block["status"] = "failed"
        block["all_upstream_blocks_executed"] = True
    meta["variables_dir"] = "/home/analyst/.mage_data/mage_project_pipelines"
    if "sample_rows" in meta["variables"]:
        meta["variables"]["sample_rows"] = 25
    return yaml.dump(meta, allow_unicode=True)


@pytest.mark.parametrize("path", METADATA, ids=lambda p: p.parent.name)
def test_committed_metadata_is_in_committed_form(path):
    text = committed_text(path)
    assert committed_form(text) == text


@pytest.mark.parametrize("path", METADATA, ids=lambda p: p.parent.name)
def test_editor_state_is_dropped_and_the_rest_kept(path):
    committed = committed_text(path)
    assert committed_form(after_an_editor_session(committed)) == committed


def test_a_change_to_the_pipeline_is_kept():
    meta = yaml.safe_load(committed_text(METADATA[0]))
    meta["description"] = "A new description."
    meta["variables"]["window_days"] = 3
    assert yaml.safe_load(committed_form(yaml.dump(meta))) == meta


@pytest.mark.parametrize("text", ["<<<<<<< HEAD\nblocks: [\n=======\n", "name: not a pipeline\n", ""])
def test_other_text_passes_unchanged(text):
    assert committed_form(text) == text


def test_runs_as_gits_clean_filter():
    committed = METADATA[0].read_bytes()
    result = subprocess.run([sys.executable, "-m", "mage_project.pipeline_metadata"], cwd=ROOT,
                            input=after_an_editor_session(committed.decode()).encode(),
                            capture_output=True, check=True)
    assert result.stdout == committed


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def checkout(tmp_path, monkeypatch):
    """A git checkout of two pipelines' committed metadata.yaml, with the clean filter set up as
    `make setup` does (and no user or system git config)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name, value in (("NAME", "Analyst"), ("EMAIL", "analyst@example.com")):
        monkeypatch.setenv(f"GIT_AUTHOR_{name}", value)
        monkeypatch.setenv(f"GIT_COMMITTER_{name}", value)
    repo = tmp_path / "project"
    for path in METADATA[:2]:
        target = repo / path.relative_to(ROOT)
        target.parent.mkdir(parents=True)
        target.write_text(committed_text(path))
    (repo / ".gitattributes").write_bytes((ROOT / ".gitattributes").read_bytes())
    git(repo, "init", "--quiet")
    git(repo, "config", "filter.mage-pipeline-state.clean",
        f"{shlex.quote(sys.executable)} -m mage_project.pipeline_metadata")
    git(repo, "add", ".")
    git(repo, "commit", "--quiet", "--message", "pipelines")
    return repo


def test_refresh_clears_git_status_of_an_editor_rewrite_and_stages_nothing(checkout):
    [session, other] = sorted(checkout.glob("pipelines/*/metadata.yaml"))
    session.write_text(after_an_editor_session(session.read_text()))
    path = str(session.relative_to(checkout))
    # The wart: the size changed, so `git status` lists the file; `git diff` reads it filtered.
    assert git(checkout, "status", "--porcelain") == f" M {path}\n"
    assert git(checkout, "diff") == ""

    assert refresh_git_index(checkout) == sorted(str(p.relative_to(checkout)) for p in (session, other))
    assert git(checkout, "status", "--porcelain") == ""
    assert git(checkout, "diff", "--cached") == ""
    assert committed_form(session.read_text()) != session.read_text()  # the editor's state stays


def test_refresh_leaves_a_real_change_unstaged(checkout):
    [session, other] = sorted(checkout.glob("pipelines/*/metadata.yaml"))
    meta = yaml.safe_load(after_an_editor_session(session.read_text()))
    meta["description"] = "A new description."
    session.write_text(yaml.dump(meta, allow_unicode=True))
    other.write_text(after_an_editor_session(other.read_text()))
    path = str(session.relative_to(checkout))

    assert refresh_git_index(checkout) == [str(other.relative_to(checkout))]
    assert git(checkout, "status", "--porcelain") == f" M {path}\n"
    assert git(checkout, "diff", "--cached") == ""
    assert "+description: A new description." in git(checkout, "diff")


def test_refresh_adds_no_untracked_metadata(checkout):
    new = checkout / "pipelines" / "new_pipeline" / "metadata.yaml"
    new.parent.mkdir()
    new.write_bytes(METADATA[0].read_bytes())
    refresh_git_index(checkout)
    assert "?? pipelines/new_pipeline/" in git(checkout, "status", "--porcelain")
    assert git(checkout, "diff", "--cached") == ""


def test_refresh_does_nothing_outside_a_git_checkout(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no checkout above it either
    (tmp_path / "pipelines" / "p").mkdir(parents=True)
    (tmp_path / "pipelines" / "p" / "metadata.yaml").write_bytes(METADATA[0].read_bytes())
    assert refresh_git_index(tmp_path) == []
    assert not (tmp_path / ".git").exists()


def test_refresh_does_nothing_without_git(checkout, monkeypatch):
    [session, _] = sorted(checkout.glob("pipelines/*/metadata.yaml"))
    session.write_text(after_an_editor_session(session.read_text()))
    with monkeypatch.context() as without_git:
        without_git.setenv("PATH", str(checkout))
        assert refresh_git_index(checkout) == []
    assert git(checkout, "status", "--porcelain") == f" M {session.relative_to(checkout)}\n"
