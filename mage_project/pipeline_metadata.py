"""The committed form of ``pipelines/*/metadata.yaml``: the pipeline without the editor's state.

Mage rewrites a pipeline's metadata.yaml whenever its editor runs or saves a block, and the
rewrite holds state of that session, not of the pipeline: each block's ``status`` (executed,
failed, updated) and ``all_upstream_blocks_executed``, and ``variables_dir``, the absolute path
of that machine's MAGE_DATA_DIR. Also session state: the ``sample_rows`` variable, which keeps
interactive runs small and would make every scheduled run a sample if it were committed.

``.gitattributes`` runs this module as git's clean filter on those files (``make setup``
registers it), so git compares and commits the form Mage writes for a fresh project, while the
editor keeps its state in the working tree. The rest (blocks, graph, settings, variables) is
kept, in Mage's own YAML layout. When the editor stops, ``refresh_git_index`` tells git's index
that the files Mage rewrote hold no change, so ``git status`` does not list them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

BLOCK_GROUPS = ("blocks", "callbacks", "conditionals", "widgets")
METADATA_FILES = ":(glob)pipelines/*/metadata.yaml"  # git's pathspec: one folder deep
EDITOR_ONLY_VARIABLES = ("sample_rows",)


def committed_form(text: str) -> str:
    """``text`` as Mage writes it for a project whose blocks have not run; anything that is not
    a pipeline's metadata (or not YAML, such as a file with merge conflict markers) unchanged."""
    try:
        meta = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if not isinstance(meta, dict) or not isinstance(meta.get("blocks"), list):
        return text
    for group in BLOCK_GROUPS:
        for block in meta.get(group) or []:
            if "status" in block:
                block["status"] = "not_executed"
            if "all_upstream_blocks_executed" in block:
                block["all_upstream_blocks_executed"] = not block.get("upstream_blocks")
    if "variables_dir" in meta:
        meta["variables_dir"] = None
    variables = meta.get("variables") or {}
    for name in EDITOR_ONLY_VARIABLES:
        if name in variables:
            variables[name] = None
    return yaml.dump(meta, allow_unicode=True)  # the call Mage's Pipeline.save makes


def refresh_git_index(project: Path) -> list[str]:
    """``git add`` each tracked ``pipelines/*/metadata.yaml`` of ``project`` whose committed form
    equals git's index; returns those files (relative to ``project``).

    Git's index keeps each file's size, and a file whose size changed counts as modified for
    ``git status`` without being read: it lists Mage's rewrites, although the clean filter takes
    them back out and ``git diff`` shows nothing. ``git add`` reads the file through the filter,
    stages the same content again and records the new size. A file with a real change (or a
    merge conflict) is not staged. Outside a git checkout, or without git, nothing is done.
    """
    git = shutil.which("git")
    if git is None:
        return []

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([git, *args], cwd=project, capture_output=True, text=True, check=False)

    if run("rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        return []
    tracked = dict.fromkeys(run("ls-files", "-z", "--", METADATA_FILES).stdout.split("\0"))
    return [path for path in tracked if path
            # `git diff` compares the filtered file with the index: exit code 0 when equal.
            and run("diff", "--quiet", "--no-ext-diff", "--", path).returncode == 0
            and run("add", "--", path).returncode == 0]


def main() -> int:
    """Git's clean filter: a metadata.yaml on stdin, its committed form on stdout."""
    data = sys.stdin.buffer.read()
    try:
        data = committed_form(data.decode("utf-8")).encode("utf-8")
    except UnicodeDecodeError:
        pass  # not Mage's file: git keeps it as it is
    sys.stdout.buffer.write(data)
    return 0


if __name__ == "__main__":
    sys.exit(main())
