"""The code is lint-clean: the commands of `make lint` (ruff on the Python, sqlfluff on the dbt
project's SQL), read from the Makefile so that `make test` checks exactly what `make lint` does;
and no function of the library is longer than a reader can hold."""

from __future__ import annotations

import ast
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


MAX_FUNCTION_LINES = 60


def long_functions(root: Path, limit: int = MAX_FUNCTION_LINES) -> list[str]:
    """``path:line name (n lines)`` for every function under ``root`` longer than ``limit``
    lines, from its ``def`` to its last line (decorators not counted, nested functions each)."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} "
                                 f"({length} lines)")
    return found


def test_a_long_function_is_found(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (package / "a.py").write_text(f"def short():\n    pass\n\n\nasync def long():\n{body}")
    assert long_functions(package) == ["pkg/a.py:5 long (61 lines)"]


def test_no_function_in_the_library_is_over_60_lines():
    assert long_functions(ROOT / "mage_project") == []
