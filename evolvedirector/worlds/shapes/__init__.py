"""The shapes world: a small text-to-image world whose every image can be checked exactly.

grammar (the 1272 prompts), render (correct and mistaken images), rules (the exact checker),
profiles (the teachers), judge (the synthetic director's comparisons) and heldout (the
benchmark) follow the contract in WORLD.md.

Import the submodules by name (`from evolvedirector.worlds.shapes import grammar`); the package
re-exports nothing, so `world.render` is always the module and never its function.

Importing the world registers its backends, so that a config naming `backend: shapes` finds them:
its teachers (teacher.py) in evolvedirector.teachers.TEACHERS, its director (director.py) in
evolvedirector.director.DIRECTORS. The teachers and directors never import a world.
"""

from evolvedirector.director import DIRECTORS
from evolvedirector.teachers import TEACHERS
from evolvedirector.worlds.shapes import director, teacher

TEACHERS["shapes"] = teacher.ShapesTeacher.from_config
DIRECTORS["shapes"] = director.ShapesDirector.from_config
