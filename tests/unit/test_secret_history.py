"""DP015 scans git history since the baseline's last change: a secret committed and deleted since is
still in every clone, and the check names the commit that holds it.

Each test builds a scratch git repository from a copy of the project's files (the baseline committed
in its first commit), makes its commits, and asserts the exact DP015 finding lines.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from support import project_copy

from mage_project import policy

ROOT = Path(__file__).resolve().parents[2]
KEY = "AKIA" + "QYLPMN5HHHFPZAM2"  # split, so that this file holds no key for the scanner
SETTINGS = "data_loaders/settings.py"
FIX = next(rule.fix for rule in policy.RULES if rule.id == "DP015")


def git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root,
                          check=True, capture_output=True, text=True)
    return done.stdout.strip()


def commit(root: Path, message: str) -> str:
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", message)
    return git(root, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path) -> Path:
    """A git repository of a copy of the project: one commit, which holds the baseline."""
    root = project_copy(tmp_path)
    git(root, "init", "-q", "-b", "main")
    commit(root, "base")
    return root


def dp015(root: Path) -> list[str]:
    return [f.text() for f in policy.check(root, rules=["DP015"])]


def in_history(line: int, sha: str) -> str:
    return (f"DP015 {SETTINGS}:{line}: possible secret (AWS Access Key) in commit {sha[:8]} "
            f"({policy.HISTORY_NOTE}): {FIX}")


def test_a_key_committed_then_deleted_fires_dp015_naming_its_commit(repo):
    (repo / SETTINGS).write_text(f'aws_access_key_id = "{KEY}"\n')
    added = commit(repo, "settings")
    git(repo, "rm", "-q", SETTINGS)
    commit(repo, "settings removed")
    assert not (repo / SETTINGS).exists()
    assert dp015(repo) == [in_history(1, added)]


def test_a_key_edited_away_is_reported_at_its_line_in_that_commit(repo):
    (repo / SETTINGS).write_text(f'import os\n\naws_access_key_id = "{KEY}"\n')
    added = commit(repo, "settings")
    (repo / SETTINGS).write_text('import os\n\naws_access_key_id = os.environ["AWS_ACCESS_KEY_ID"]\n')
    commit(repo, "settings from the environment")
    git(repo, "mv", SETTINGS, "data_loaders/aws_settings.py")
    commit(repo, "settings renamed")  # a rename adds no line: the key stays reported where it was added
    assert dp015(repo) == [in_history(3, added)]


def test_a_key_in_a_file_whose_name_git_quotes_is_found(repo):
    name = "data_loaders/my settings \u00e9.py"  # git C-quotes the non-ASCII name and tabs the space
    (repo / name).write_text(f'aws_access_key_id = "{KEY}"\n')
    added = commit(repo, "settings")
    git(repo, "rm", "-q", name)
    commit(repo, "settings removed")
    assert dp015(repo) == [in_history(1, added).replace(SETTINGS, name)]


def test_a_clean_history_has_no_finding(repo):
    (repo / SETTINGS).write_text('import os\n\naws_access_key_id = os.environ["AWS_ACCESS_KEY_ID"]\n')
    commit(repo, "settings from the environment")
    assert dp015(repo) == []


def test_a_key_still_in_the_files_is_reported_once_as_the_working_trees(repo):
    (repo / SETTINGS).write_text(f'aws_access_key_id = "{KEY}"\n')
    commit(repo, "settings")
    # The base is HEAD (on main), so only history holds the key's commit; the file still holds the key.
    assert dp015(repo) == [f"DP015 {SETTINGS}:1: possible secret (AWS Access Key): {FIX}"]


def test_a_key_committed_before_the_baseline_last_change_is_not_reported(repo):
    (repo / SETTINGS).write_text(f'aws_access_key_id = "{KEY}"\n')
    added = commit(repo, "settings")
    git(repo, "rm", "-q", SETTINGS)
    commit(repo, "settings removed")
    assert dp015(repo) == [in_history(1, added)]
    baseline = json.loads((repo / ".secrets.baseline").read_text())
    baseline["generated_at"] = "2027-01-01T00:00:00Z"  # rescanned and audited after that history
    (repo / ".secrets.baseline").write_text(json.dumps(baseline, indent=2) + "\n")
    commit(repo, "secrets baseline re-audited")
    assert dp015(repo) == []


def test_history_beyond_the_bound_is_reported_as_not_scanned(repo, monkeypatch):
    (repo / SETTINGS).write_text(f'aws_access_key_id = "{KEY}"\n')
    commit(repo, "settings")
    git(repo, "rm", "-q", SETTINGS)
    commit(repo, "settings removed")
    (repo / "data_loaders/notes.txt").write_text("one line\n")
    commit(repo, "notes")
    monkeypatch.setattr(policy, "HISTORY_LINES", 1)  # the newest commit's line, then the deletion's none
    assert dp015(repo) == [
        "DP015 .secrets.baseline: 1 older commit(s) since the baseline was last committed not scanned for "
        "secrets (the scan stops after 1 added lines): check them (git log -p), then rescan and commit the "
        f"baseline: {FIX}"]


def test_without_git_history_is_not_scanned(tmp_path):
    root = tmp_path / "project"
    shutil.copytree(ROOT / "data_loaders", root / "data_loaders")
    shutil.copy(ROOT / ".secrets.baseline", root / ".secrets.baseline")
    assert policy._history_secrets(root) == ([], 0)
    assert dp015(root) == []
