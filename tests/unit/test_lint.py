"""The code is lint-clean: the commands of `make lint` (ruff on the Python, sqlfluff on the dbt
project's SQL), read from the Makefile so that `make test` checks exactly what `make lint` does."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def lint_commands() -> list[list[str]]:
    """The recipe of the Makefile's lint target, with $(BIN) as this interpreter's bin dir."""
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert recipe, "the Makefile has no lint target"
    return [shlex.split(line.strip().replace("$(BIN)", str(BIN))) for line in recipe[1].splitlines()]


def test_make_lint_runs_ruff_and_sqlfluff_on_the_dbt_project():
    tools = {Path(command[0]).name: command[1:] for command in lint_commands()}
    assert tools.keys() == {"ruff", "sqlfluff"}
    assert tools["sqlfluff"][:2] == ["lint", "dbt/warehouse/models"]


@pytest.mark.parametrize("command", lint_commands(), ids=lambda c: Path(c[0]).name)
def test_lint_is_clean(command):
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, (
        f"{shlex.join(command)} found violations:\n{result.stdout[-6000:]}{result.stderr[-2000:]}")
