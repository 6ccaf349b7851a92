"""The loop is given a world; it never imports one (worlds/base.py is the contract between them).
Nor do the teachers and the directors, a layer below: a world registers its own backends with them."""

import ast
import subprocess
import sys
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


def test_no_module_of_the_teachers_or_the_directors_imports_a_world():
    checked = sorted((PACKAGE / "teachers").glob("*.py")) + sorted((PACKAGE / "director").glob("*.py"))
    assert len(checked) >= 10, "the teachers' and directors' modules were not found"
    for path in checked:
        offending = {m for m in imported_modules(path) if m.startswith("evolvedirector.worlds")}
        assert not offending, f"{path.relative_to(PACKAGE)} imports {sorted(offending)}"


def test_a_config_that_names_the_shapes_backends_can_build_them():
    # In a fresh interpreter that imports the config and the two registries, and no world by name:
    # the config brings in the worlds, which register `backend: shapes` with the registries.
    code = ("from evolvedirector.config import RunConfig; from evolvedirector.teachers import build_teacher; "
            "from evolvedirector.director import build_director; config = RunConfig(); "
            "print(type(build_teacher(config.teachers[0])).__name__, "
            "type(build_director(config.director, seed=0)).__name__)")
    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert built.stdout.split() == ["ShapesTeacher", "ShapesDirector"]
