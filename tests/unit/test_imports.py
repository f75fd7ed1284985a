"""The library's import graph, read from the source with ``ast``: the entry points (``cli``,
``demo``, ``editor``) sit on top of the runner, which reaches none of them.

Every import counts, at module level or inside a function (a deferred import still closes a
circle, it only moves the failure to run time); ``from package import name`` counts as importing
the submodule ``package.name`` when there is one, else the package.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = "mage_project"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the package at ``root``."""
    found = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package's modules that module ``name`` (its source at ``path``) imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                targets.add(submodule if submodule in known else base)
    return {target for target in targets if target in known and target != name}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    known = modules(root)
    return {name: imported(name, path, known) for name, path in known.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return [*path[path.index(target):], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_kind_of_import_is_an_edge(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    sources = {
        "__init__.py": "",
        "a.py": "import os\nimport pkg.b\nfrom pkg.sub import c\n",
        "b.py": "def f():\n    from pkg import a\n",  # function level
        "sub/__init__.py": "from .c import NAME\n",  # relative, a name of a module
        "sub/c.py": "from .. import b\nfrom ..sub import NAME\nNAME = 1\n",
    }
    for name, text in sources.items():
        (package / name).write_text(text)
    assert import_graph(package) == {
        "pkg": set(),
        "pkg.a": {"pkg.b", "pkg.sub.c"},
        "pkg.b": {"pkg.a"},
        "pkg.sub": {"pkg.sub.c"},
        "pkg.sub.c": {"pkg.b", "pkg.sub"},
    }


def test_the_graph_is_read_from_every_module():
    graph = import_graph()
    assert {"mage_project", "mage_project.cli", "mage_project.runner", "mage_project.config",
            "mage_project.warehouse", "mage_project.sources.activity_simulator"} <= graph.keys()
    assert "mage_project.runner" in graph["mage_project.cli"]  # module level
    assert "mage_project.alerts" in graph["mage_project.cli"]  # in a function, from the package
    assert "mage_project.sources.activity_simulator" in graph["mage_project.runner"]


@pytest.mark.parametrize("entry_point", ["cli", "demo", "editor"])
def test_the_runner_imports_no_entry_point(entry_point):
    graph = import_graph()
    reachable, todo = set(), ["mage_project.runner"]
    while todo:
        for target in graph[todo.pop()] - reachable:
            reachable.add(target)
            todo.append(target)
    assert f"mage_project.{entry_point}" not in reachable


@pytest.mark.parametrize(("graph", "cycle"), [
    ({"a": {"b"}, "b": {"c"}, "c": set()}, None),
    ({"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
    ({"a": {"b", "c"}, "b": set(), "c": {"d"}, "d": {"c"}}, ["c", "d", "c"]),
])
def test_a_circle_is_found_and_named(graph, cycle):
    assert find_cycle(graph) == cycle


def test_the_library_has_no_import_circle():
    assert find_cycle(import_graph()) is None


DRIVERS = ("psycopg2", "snowflake")  # top-level packages of the drivers


def drivers_imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module or "")
    return {name for name in names if name.split(".")[0] in DRIVERS}


def test_nothing_above_the_warehouse_layer_imports_a_driver():
    """The library outside ``warehouse/`` and every Mage block file: no database driver."""
    blocks = [path for folder in ("data_loaders", "transformers", "data_exporters", "custom")
              for path in (ROOT.parent / folder).glob("*.py")]
    above = [path for name, path in modules().items() if not name.startswith(f"{PACKAGE}.warehouse")]
    assert len(blocks) > 5
    assert {str(path): found for path in [*above, *blocks] if (found := drivers_imported(path))} == {}
    # The walk sees the drivers where they belong.
    assert "psycopg2" in drivers_imported(ROOT / "warehouse" / "postgres.py")
    assert "snowflake.connector" in drivers_imported(ROOT / "warehouse" / "snowflake.py")


def readme_layers() -> list[tuple[str, list[str]]]:
    """The README's table of the library's layers, top to bottom: (layer, its modules)."""
    text = (ROOT.parent / "README.md").read_text()
    table = text[text.index("| layer, top to bottom |"):].split("\n\n")[0].splitlines()[2:]
    return [(row.split("|")[1].strip(), re.findall(r"`([\w.]+)`", row.split("|")[2]))
            for row in table]


def layer_of(module: str, layers: list[tuple[str, list[str]]]) -> int:
    """The index of the layer naming ``module`` or a package holding it (the package itself for
    ``mage_project``); raises if none or more than one does."""
    name = module.removeprefix(f"{PACKAGE}.") if module != PACKAGE else "__init__"
    found = [i for i, (_, names) in enumerate(layers) for listed in names
             if name == listed or name.startswith(f"{listed}.")]
    assert len(found) == 1, f"{module} is in {len(found)} layers of the README"
    return found[0]


def test_the_readmes_layers_are_the_import_graphs():
    layers = readme_layers()
    assert [layer for layer, _ in layers] == [
        "entry points", "runner", "pipelines", "services", "warehouse", "foundation"]
    graph = import_graph()
    graph.pop(PACKAGE)  # the package's empty __init__
    upward = [f"{source} imports {target}" for source, targets in graph.items()
              for target in targets if layer_of(target, layers) < layer_of(source, layers)]
    assert upward == []
