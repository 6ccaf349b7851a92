"""The package's layers point one way, and no module imports itself back through others.

From the bottom: http, credentials, seeds, store -> student, teachers, director -> config, worlds ->
trainer, evaluation -> loop -> bench, publish (and the test servers in testing/) -> cli. A module
imports only from its own layer or those below. Imports under `if TYPE_CHECKING:` name a type
for annotations and run nothing, so they are left out; every other import counts, those inside
functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import evolvedirector

PACKAGE = Path(evolvedirector.__file__).parent
LAYERS = (
    ("http", "credentials", "seeds", "store"),
    ("student", "teachers", "director"),
    ("config", "worlds"),
    ("trainer", "evaluation"),
    ("loop",),
    ("bench", "publish", "testing"),
    ("cli", "launch", "__main__"),
)


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1:  # the package itself sits on top
        return len(LAYERS) - 1
    for number, names in enumerate(LAYERS):
        if parts[1] in names:
            return number
    raise AssertionError(f"{module} is in no layer: add {parts[1]!r} to LAYERS")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(source: str) -> list[tuple[str, list[str], int]]:
    """(imported module, the names taken from it, line) for every import outside TYPE_CHECKING."""
    tree = ast.parse(source)
    annotation_only = {id(node) for block in ast.walk(tree)
                       if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                       for statement in block.body for node in ast.walk(statement)}
    found = []
    for node in ast.walk(tree):
        if id(node) in annotation_only:
            continue
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, [alias.name for alias in node.names], node.lineno))
    return [(module, names, line) for module, names, line in found if module.split(".")[0] == "evolvedirector"]


def modules() -> dict[str, str]:
    return {module_name(path): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def upward_imports(sources: dict[str, str]) -> list[str]:
    return [f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)}) at line {line}"
            for module, source in sources.items() for target, _names, line in imports(source)
            if layer(target) > layer(module)]


def cycles(sources: dict[str, str]) -> list[list[str]]:
    """Groups of modules that import one another round in a circle (Tarjan's strongly connected
    components). A module importing its own parent package is not a cycle: the package runs first."""
    graph = {module: set() for module in sources}
    for module, source in sources.items():
        for target, names, _line in imports(source):
            for candidate in (target, *(f"{target}.{name}" for name in names)):
                if candidate in sources and candidate != module and not module.startswith(candidate + "."):
                    graph[module].add(candidate)
    order, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module: str) -> None:
        order[module] = low[module] = len(order)
        stack.append(module)
        on_stack.add(module)
        for target in graph[module]:
            if target not in order:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], order[target])
        if low[module] == order[module]:
            group = []
            while not group or group[-1] != module:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                found.append(sorted(group))

    for module in graph:
        if module not in order:
            visit(module)
    return found


def test_no_module_imports_one_of_a_higher_layer():
    sources = modules()
    assert len(sources) > 50, "the package's modules were not found"
    assert upward_imports(sources) == []


def test_no_import_cycle():
    assert cycles(modules()) == []


def test_both_checks_can_fire():
    sources = {
        "evolvedirector.store.db": "from evolvedirector.loop import Evolution\n",
        "evolvedirector.loop.round": "from evolvedirector.loop.evolve import Evolution\n",
        "evolvedirector.loop.evolve": "def later():\n    from evolvedirector.loop.round import run_round\n",
        "evolvedirector.student.latest": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                         "    from evolvedirector.config import RunConfig\n",
    }
    assert upward_imports(sources) == ["evolvedirector.store.db (layer 0) imports evolvedirector.loop (layer 4) at line 1"]
    assert cycles(sources) == [["evolvedirector.loop.evolve", "evolvedirector.loop.round"]]
