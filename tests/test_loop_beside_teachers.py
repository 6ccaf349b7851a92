"""A graded run ends with its student beside each teacher, on the same held-out prompts."""

import io

import pytest
from rich.console import Console

from evolvedirector.config import TeacherConfig, parse_config
from evolvedirector.loop import Evolution
from evolvedirector.worlds.shapes.world import ShapesWorld
from tests.helpers import tiny_config


def test_the_last_lines_show_the_student_beside_each_teacher(tmp_path):
    out = io.StringIO()
    evolution = Evolution(parse_config(tiny_config(tmp_path / "run")), console=Console(file=out, width=200))
    evolution.run()
    lines = out.getvalue().strip().splitlines()
    tail = lines[lines.index(next(l for l in lines if l.startswith("stopped"))) + 1:]
    assert tail[0].startswith("held-out accuracy, 2 prompts per category (student after round 2")
    rows = {line.split()[0]: [float(v) for v in line.split()[1:]] for line in tail[2:6]}
    assert list(rows) == ["student", "atlas", "quill", "tally"]
    last = evolution.store.rounds()[-1]["metrics"]["accuracy"]
    assert rows["student"] == pytest.approx([last[k] for k in ("object", "relation", "count", "text", "mean")], abs=0.006)
    own = evolution.world.teachers_own(evolution.config.teachers)
    assert rows["quill"][3] == pytest.approx(own["quill"]["text"], abs=0.006)
    assert tail[-1].startswith(f"the student's mean {last['mean']:.2f} is ")


def test_teachers_own_accuracy_follows_their_profiles():
    world = ShapesWorld(heldout_per_domain=24)
    own = world.teachers_own([TeacherConfig(name="atlas"), TeacherConfig(name="tally")], draws=20)
    assert set(own) == {"atlas", "tally"}
    # atlas draws 98 % of objects right and 20 % of letters; tally 97 % of counts (WORLD.md)
    assert own["atlas"]["object"] > 0.9 and own["atlas"]["text"] < 0.35
    assert own["tally"]["count"] > 0.9 and own["tally"]["relation"] < 0.7
