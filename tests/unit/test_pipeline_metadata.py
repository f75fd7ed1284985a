"""The clean filter keeps the editor's session state out of pipelines/*/metadata.yaml in git."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mage_project.pipeline_metadata import committed_form

ROOT = Path(__file__).resolve().parents[2]
METADATA = sorted((ROOT / "pipelines").glob("*/metadata.yaml"))


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
    text = path.read_text()
    assert committed_form(text) == text


@pytest.mark.parametrize("path", METADATA, ids=lambda p: p.parent.name)
def test_editor_state_is_dropped_and_the_rest_kept(path):
    committed = path.read_text()
    assert committed_form(after_an_editor_session(committed)) == committed


def test_a_change_to_the_pipeline_is_kept():
    meta = yaml.safe_load(METADATA[0].read_text())
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
