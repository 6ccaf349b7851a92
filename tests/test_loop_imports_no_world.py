"""The loop is given a world; it never imports one (worlds/base.py is the contract between them)."""

import ast
from pathlib import Path

import evolvedirector

PACKAGE = Path(evolvedirector.__file__).parent
WORLD_MODULES = ("evolvedirector.worlds.shapes", "evolvedirector.worlds.prompts")


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def test_no_module_of_the_loop_or_the_evaluation_imports_a_world():
    checked = sorted((PACKAGE / "loop").glob("*.py")) + sorted((PACKAGE / "evaluation").glob("*.py"))
    assert len(checked) >= 8, "the loop and evaluation modules were not found"
    for path in checked:
        offending = {m for m in imported_modules(path) if m.startswith(WORLD_MODULES)}
        assert not offending, f"{path.relative_to(PACKAGE)} imports {sorted(offending)}"


def test_the_check_sees_a_world_import():
    # The check above can fire: a module that imports the shapes grammar is caught.
    source = PACKAGE / "worlds" / "shapes" / "world.py"
    assert any(m.startswith(WORLD_MODULES) for m in imported_modules(source))
