"""Imports inside catalog/ go one way: doors -> offline tools -> pipeline -> curation ->
enqueue -> models and hosting (and the search library), never back.

Read from the source, so an import inside a function counts as much as one at the top.
The one exception is the lazy `catalog.tasks` import in catalog.enqueue: the tasks are the
pipeline's doors, and enqueue is how the layers below them start work in a worker.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lower layers first; a module may import its own layer and the ones before it.
LAYERS = [
    (
        "base",
        [
            "catalog.models",
            "catalog.staging",
            "catalog.hosting",
            "catalog.searchable_counts",
            "catalog.sources",
            "catalog.item_fields",
            "catalog.feeds",
        ],
    ),
    ("enqueue", ["catalog.enqueue"]),
    (
        "curation",
        [
            "catalog.services",
            "catalog.selectors",
            "catalog.importing",
            "catalog.items",
            "catalog.sync",
        ],
    ),
    ("pipeline", ["catalog.pipeline"]),
    ("offline", ["catalog.offline"]),
    (
        "doors",
        [
            "catalog.admin",
            "catalog.apis",
            "catalog.schemas",
            "catalog.tasks",
            "catalog.management",
            "catalog.apps",
            "catalog.checks",
        ],
    ),
]
LAZY_TASKS_IMPORT = ("catalog.enqueue", "catalog.tasks")
# The search app's own doors, which read the catalog (search.services uses its selectors).
SEARCH_DOORS = ("search.services", "search.apis")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def catalog_modules() -> dict[str, Path]:
    paths = [p for p in (ROOT / "catalog").rglob("*.py") if "migrations" not in p.parts]
    return {module_name(path): path for path in paths}


def search_modules() -> dict[str, Path]:
    return {module_name(path): path for path in (ROOT / "search").rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.add(submodule if submodule in known else base)
    return found


def layer_of(name: str) -> int | None:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            return rank
    return None


@functools.cache
def catalog_graph() -> dict[str, frozenset[str]]:
    modules = catalog_modules()
    known = set(modules) | set(search_modules())
    return {name: frozenset(imports_of(name, path, known)) for name, path in modules.items()}


def test_every_catalog_module_has_a_layer():
    unplaced = [name for name in catalog_modules() if name != "catalog" and layer_of(name) is None]
    assert unplaced == [], "add these to LAYERS in this test"


def test_catalog_imports_go_down_the_layers():
    backwards = []
    for name, imported in catalog_graph().items():
        if name == "catalog":
            continue
        for target in imported:
            if (name, target) == LAZY_TASKS_IMPORT or not target.startswith("catalog."):
                continue
            if layer_of(target) > layer_of(name):
                backwards.append(f"{name} imports {target}")
    assert sorted(backwards) == []


def test_only_enqueue_imports_the_tasks():
    importers = [name for name, imported in catalog_graph().items() if "catalog.tasks" in imported]
    assert importers == ["catalog.enqueue"]


def test_catalog_uses_the_search_library_not_its_doors():
    used = [
        f"{name} imports {target}"
        for name, imported in catalog_graph().items()
        for target in imported
        if target.startswith(SEARCH_DOORS)
    ]
    assert used == []


def test_the_search_library_does_not_import_the_catalog():
    graph = {
        name: imports_of(name, path, set(search_modules()))
        for name, path in search_modules().items()
        if not name.startswith(SEARCH_DOORS)
    }
    assert [
        name for name, imported in graph.items() if any(i.startswith("catalog") for i in imported)
    ] == []


@pytest.mark.parametrize("start", sorted(catalog_modules()))
def test_no_module_imports_itself_back(start):
    """No circle, even inside a layer: following the imports from `start` (leaving out the
    lazy tasks import) never comes back to it."""
    graph = dict(catalog_graph())
    graph["catalog.enqueue"] = graph["catalog.enqueue"] - {"catalog.tasks"}
    seen, todo = set(), list(graph.get(start, ()))
    while todo:
        name = todo.pop()
        if name in seen or name not in graph:
            continue
        seen.add(name)
        todo.extend(graph[name])
    assert start not in seen
