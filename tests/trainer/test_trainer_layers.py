"""The trainer knows nothing above it: the loop uses the trainer, never the other way round (the
launcher, which needs the loop's run lock and trackers, is a command beside cli.py)."""

import ast
from pathlib import Path

import evolvedirector.trainer

ABOVE = ("evolvedirector.loop", "evolvedirector.bench", "evolvedirector.publish", "evolvedirector.cli",
         "evolvedirector.launch")


def imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_no_trainer_module_imports_a_layer_above_it():
    folder = Path(evolvedirector.trainer.__file__).parent
    upward = {f"{path.name}: {name}" for path in folder.glob("*.py") for name in imported(path)
              if name.startswith(ABOVE)}
    assert not upward, sorted(upward)
    assert (folder.parent / "launch.py").is_file()  # the launcher is above, where the loop may be imported
