"""The package's layout holds: no import cycle, adapters that import only the base,
a public API that is exactly what the README shows, and modules a reader can take in."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import reconcile
from tests.helpers import ROOT

PACKAGE = ROOT / "reconcile"
README = (ROOT / "README.md").read_text()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(name: str) -> set[str]:
    """The package's modules that `name` imports anywhere in its text (lazy imports too)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from reconcile.cli import options` imports a module; `from x import name`, x.
            module = node.module
            targets = [
                f"{module}.{a.name}" if f"{module}.{a.name}" in MODULES else module
                for a in node.names
            ]
        else:
            continue
        for spelled in targets:
            target = spelled
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            # Importing a package's submodule runs the package's __init__ first, but that
            # is Python's doing, not an import the module makes: only named modules count.
            if target and target != name and target != "reconcile":
                found.add(target)
    return found


GRAPH = {name: imports(name) for name in MODULES}


def test_no_import_cycle_anywhere_in_the_package() -> None:
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(GRAPH[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in MODULES:
        visit(name, [])


def test_the_graph_sees_imports_made_inside_functions() -> None:
    # The check above could pass by missing lazy imports; it must not.
    assert "reconcile.stores.qdrant" in GRAPH["reconcile.stores"]
    assert "reconcile.stores.edge" in GRAPH["reconcile.stores"]


def test_each_store_adapter_imports_only_the_base_of_the_stores() -> None:
    for backend in ("postgres", "qdrant", "edge", "rest"):
        name = f"reconcile.stores.{backend}"
        ours = {m for m in GRAPH[name] if m.startswith("reconcile.stores")}
        assert ours == {"reconcile.stores.base"}, name
        # Below the stores there are only settings, the mapping's rules and errors.
        below = {"reconcile.errors", "reconcile.mapping", "reconcile.settings"}
        assert GRAPH[name] - ours <= below, name
    assert not {m for m in GRAPH["reconcile.stores.base"] if m.startswith("reconcile.")}


def test_the_library_never_imports_the_cli_or_rich() -> None:
    for name, path in MODULES.items():
        if name.startswith(("reconcile.cli", "reconcile.testing", "reconcile.__main__")):
            continue
        assert not any(m.startswith("reconcile.cli") for m in GRAPH[name]), name
        assert not re.search(r"^\s*(from|import) (typer|rich)\b", path.read_text(), re.M), name


def test_only_the_rendering_module_imports_rich() -> None:
    users = {n for n, p in MODULES.items() if re.search(r"^\s*from rich\b", p.read_text(), re.M)}
    assert users == {"reconcile.cli.render"}


def test_no_public_name_is_also_a_module() -> None:
    for name in reconcile.__all__:
        assert f"reconcile.{name}" not in MODULES, name
        assert getattr(reconcile, name) is not None


def readme_names() -> set[str]:
    """Every `reconcile.NAME` and `from reconcile import NAME` in the README's Library section."""
    section = README.split("\n## Library", 1)[1].split("\n## ", 1)[0]
    names = set(re.findall(r"\breconcile\.([A-Za-z_]\w*)", section))
    for group in re.findall(r"from reconcile import ([\w, ]+)", section):
        names.update(n.strip() for n in group.split(","))
    return names


def test_all_is_exactly_what_the_readme_shows() -> None:
    assert readme_names() - {"__all__"} == set(reconcile.__all__)


def test_modules_are_short_or_say_why() -> None:
    for name, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > 420:
            head = ast.get_docstring(ast.parse(text)) or ""
            assert "on purpose" in head, f"{name}: {len(text.splitlines())} lines, no reason given"


def readme_layers() -> list[list[str]]:
    """The module names of each row of the README's layout table, top to bottom."""
    table = README.split("| module | holds |", 1)[1].split("\n\n", 1)[0]
    layers = []
    for line in table.splitlines()[2:]:
        cell = line.split("|")[1]
        names = []
        for spelled in re.findall(r"`([^`]+)`", cell):
            path = spelled.removesuffix("/").removesuffix(".py").removesuffix("/__init__")
            names.append("reconcile." + path.replace("/", "."))
        layers.append(names)
    return layers


def test_modules_import_only_what_stands_above_them_in_the_readme() -> None:
    rank = {name: i for i, names in enumerate(readme_layers()) for name in names}

    def layer(module: str) -> int:
        while module not in rank:
            assert "." in module, f"{module} is in no row of the README's layout table"
            module = module.rpartition(".")[0]
        return rank[module]

    for name, targets in GRAPH.items():
        if name in ("reconcile", "reconcile.__main__"):
            continue  # the public API and `python -m reconcile` sit on top of everything
        for target in targets:
            assert layer(target) <= layer(name), f"{name} imports {target}, listed below it"
