"""The package's shape: every module imports, imports run one way, and nothing goes in circles.

Every import counts, the lazy ones inside functions and the ``TYPE_CHECKING`` ones too: an
upward import hidden in a function is still a later stage that an earlier one depends on.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import raycat

# Rooms in data-flow order; a module may import from its own room and the rooms before it.
LAYERS = [
    {
        "raycat",
        "raycat.errors",
        "raycat.schema",
        "raycat.fsutil",
        "raycat.healpix",
        "raycat.section",
        "raycat.runtime",
        "raycat.stats",
        "raycat.progress",
        "raycat.extras",
    },
    {"raycat.surveys"},
    {"raycat.config"},
    {"raycat.sky"},
    {"raycat.plan"},
    {"raycat.cutouts"},
    {"raycat.photoz"},
    {"raycat.catalog"},
    {"raycat.quality"},
    {"raycat.pipeline", "raycat.cli", "raycat.demo", "raycat.__main__"},
]
ROOT = Path(raycat.__file__).parent


def all_modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts).removesuffix(".__init__")
        mods[name] = path
    return mods


MODULES = all_modules()


def layer(module: str) -> int:
    """The room of a module: the longest listed prefix that names it."""
    for candidate in (module, module.rpartition(".")[0]):
        for i, room in enumerate(LAYERS):
            if candidate in room:
                return i
    raise AssertionError(f"{module} is in no room: add it to LAYERS")


def imported_modules(module: str) -> set[str]:
    """raycat modules that ``module`` imports anywhere in its source."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return imports_in(ast.parse(path.read_text()), package) - {module}


def imports_in(tree: ast.AST, package: str) -> set[str]:
    """raycat modules imported anywhere in ``tree`` (relative imports against ``package``)."""
    found = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != "raycat":
                found.add(name)
    return found


GRAPH = {m: imported_modules(m) for m in MODULES}


@pytest.mark.parametrize("module", sorted(set(MODULES) - {"raycat.__main__"}))  # it runs the CLI
def test_every_module_imports(module):
    importlib.import_module(module)


def test_every_module_is_in_a_room():
    for module in MODULES:
        layer(module)
    assert {m.name for m in pkgutil.iter_modules(raycat.__path__) if m.ispkg} == {
        "surveys",
        "sky",
        "plan",
        "cutouts",
        "photoz",
        "catalog",
        "quality",
    }


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [
        f"{m} (room {layer(m)}) imports {d} (room {layer(d)})"
        for m, deps in sorted(graph.items())
        for d in sorted(deps)
        if layer(d) > layer(m)
    ]


def find_circle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as a list of modules, or None."""
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> list[str] | None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                return [*stack[stack.index(dep) :], dep]
            if not state.get(dep) and (circle := visit(dep, [*stack, dep])):
                return circle
        state[module] = 2
        return None

    for module in sorted(graph):
        if not state.get(module) and (circle := visit(module, [module])):
            return circle
    return None


def test_imports_run_one_way():
    assert not upward_imports(GRAPH), "\n".join(upward_imports(GRAPH))


def test_no_import_circle():
    circle = find_circle(GRAPH)
    assert circle is None, " -> ".join(circle or [])


def test_the_checks_find_what_they_look_for():
    """On made-up graphs: a lazy upward import and a two-module circle are both reported."""
    assert upward_imports({"raycat.cutouts.actor": {"raycat.photoz.model"}}) == [
        "raycat.cutouts.actor (room 5) imports raycat.photoz.model (room 6)"
    ]
    assert upward_imports({"raycat.photoz.model": {"raycat.cutouts.actor"}}) == []
    assert find_circle(
        {
            "raycat.catalog.write": {"raycat.catalog.read"},
            "raycat.catalog.read": {"raycat.catalog.write"},
        }
    ) == ["raycat.catalog.read", "raycat.catalog.write", "raycat.catalog.read"]
    lazy = "def f():\n    from raycat.quality.report import build_report\n"
    assert "raycat.quality.report" in imports_in(ast.parse(lazy), "raycat.plan")
