"""The director's held-out measure of an open-world run (loop/heldout.py): a figure per category
with its interval every round, the best teacher image of each held-out prompt bought once and
in the ledger, or P(yes) with a pointwise director and no teacher image at all."""

from __future__ import annotations

import json

import pytest
import yaml
from test_teachers_unreachable import openai_teacher, table, write_config
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import load_config
from evolvedirector.loop import heldout
from evolvedirector.testing.chat_server import OpenWorldChatServer
from evolvedirector.testing.fake_images_api import FakeImageAPI
from evolvedirector.worlds import build_world

pytestmark = pytest.mark.timeout(300)
runner = CliRunner()
PER_CATEGORY = 2  # the file's 3 categories hold 2 held-out prompts each


def judged_rounds(run) -> list[dict]:
    return [json.loads(row["metrics"])["director_heldout"] for row in table(run, "SELECT metrics FROM rounds ORDER BY round")]


def test_a_win_rate_against_the_best_teacher_bought_once_per_prompt_each_round(tmp_path):
    with FakeImageAPI() as api, OpenWorldChatServer(seed=2) as chat:
        teachers = [openai_teacher("a", f"{api.url}/v1"), openai_teacher("b", f"{api.url}/v1", model="other")]
        config = write_config(tmp_path, teachers, chat.base_url, max_rounds=2, heldout_judged=PER_CATEGORY)
        result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    prompts = heldout.judged_prompts(load_config(config), build_world(load_config(config)))
    categories = {build_world(load_config(config)).category(p) for p in prompts}
    assert len(prompts) == 3 * PER_CATEGORY and len(categories) == 3
    rounds = judged_rounds(run)
    assert len(rounds) == 3  # the seed round and two more
    for judged in rounds:
        assert judged["measure"] == heldout.WIN_RATE and judged["prompts"] == len(prompts)
        assert set(judged["categories"]) == {*categories, "mean"}
        assert judged["usable"] == judged["categories"]["mean"]["n"] > 0
        for cell in judged["categories"].values():
            assert 0 <= cell["low"] <= cell["rate"] <= cell["high"] <= 1
    # Every teacher drew each held-out prompt once, in round 0; the director's choice is stored.
    calls = table(run, "SELECT prompt, teacher, round, status, image_hash FROM teacher_calls")
    held = [c for c in calls if c["prompt"] in set(prompts)]
    assert sorted((c["prompt"], c["teacher"]) for c in held) == sorted((p, t) for p in prompts for t in ("a", "b"))
    assert {c["round"] for c in held} == {0} and {c["status"] for c in held} == {"done"}
    references = {r["prompt"]: (r["teacher"], r["image_hash"]) for r in table(run, "SELECT * FROM heldout_references")}
    assert set(references) == set(prompts)
    assert all((p, t, h) in {(c["prompt"], c["teacher"], c["image_hash"]) for c in held}
               for p, (t, h) in references.items())
    # Never trained on.
    assert not set(prompts) & {r["prompt"] for r in table(run, "SELECT prompt FROM samples")}
    assert result.output.count("held-out, director's win rate against the best teacher") == 3
    assert "held-out: the director judges 6 held-out prompts each round" in result.output
    status = runner.invoke(app, ["status", str(run)])
    assert "held-out, director's win rate against the best teacher" in status.output
    assert "held-out mean" in (run / "report.html").read_text()


def test_a_pointwise_director_gives_p_yes_and_buys_nothing_for_it(tmp_path):
    with FakeImageAPI() as api, OpenWorldChatServer(seed=2) as chat:
        config = write_config(tmp_path, [openai_teacher("a", f"{api.url}/v1")], chat.base_url,
                              heldout_judged=PER_CATEGORY)
        data = yaml.safe_load(config.read_text())
        data["director"]["mode"] = "pointwise"
        config.write_text(yaml.safe_dump(data))
        result = runner.invoke(app, ["run", str(config)])
        pointwise_asked = chat.requests["pointwise"]
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    prompts = heldout.judged_prompts(load_config(config), build_world(load_config(config)))
    for judged in judged_rounds(run):
        assert judged["measure"] == heldout.P_YES and judged["usable"] == len(prompts)
        assert 0 <= judged["categories"]["mean"]["low"] <= judged["categories"]["mean"]["high"] <= 1
    assert pointwise_asked >= 2 * len(prompts)  # two rounds' held-out prompts, beside the round's judging
    assert not set(prompts) & {c["prompt"] for c in table(run, "SELECT prompt FROM teacher_calls")}
    assert not table(run, "SELECT * FROM heldout_references")


def capped_config(tmp_path, **budget):
    """Two teachers at $0.04 an image, 2 held-out prompts per category wanted, and `budget`."""
    teachers = [openai_teacher("a", "http://127.0.0.1:9/v1"), openai_teacher("b", "http://127.0.0.1:9/v1")]
    path = write_config(tmp_path, teachers, "http://127.0.0.1:9/v1", heldout_judged=PER_CATEGORY)
    data = yaml.safe_load(path.read_text())
    data["budget"] = {"max_rounds": 3, **budget}
    path.write_text(yaml.safe_dump(data))
    config = load_config(path)
    return config, build_world(config)


@pytest.mark.parametrize("budget, per_category, field", [
    ({}, PER_CATEGORY, None),
    ({"max_teacher_calls": 1000}, PER_CATEGORY, None),
    # A quarter of 40 calls is 10: 5 prompts from each of the 2 teachers, 1 for each of 3 categories.
    ({"max_teacher_calls": 40}, 1, "budget.max_teacher_calls (40)"),
    # A quarter of $1 buys 3 prompts from both teachers ($0.08 each): 1 per category.
    ({"max_dollars": 1.0}, 1, "budget.max_dollars ($1)"),
    ({"max_dollars": 1.0, "max_teacher_calls": 12}, 0, "budget.max_teacher_calls (12)"),
])
def test_the_references_take_at_most_a_quarter_of_the_budget(tmp_path, budget, per_category, field):
    config, world = capped_config(tmp_path, **budget)
    allowed, why = heldout.judged_per_category(config, world)
    assert allowed == per_category
    assert (why is None) == (field is None) and (field is None or field in why)
    prompts = heldout.judged_prompts(config, world)
    assert len(prompts) == 3 * per_category
    calls = len(prompts) * len(config.teachers)
    if "max_teacher_calls" in budget:
        assert calls <= budget["max_teacher_calls"] / 4
    if "max_dollars" in budget:
        assert len(prompts) * 0.08 <= budget["max_dollars"] / 4


def test_the_plan_says_when_the_references_are_capped_or_left_out(tmp_path, monkeypatch):
    from evolvedirector.loop import plan
    from evolvedirector.store import Store

    monkeypatch.setattr(plan, "measure", lambda *a, **k: plan.Measured(step_seconds=0.01, render_seconds=0.001))
    for budget, expected in (({"max_teacher_calls": 40}, "judges 3 held-out prompts each round"),
                             ({"max_teacher_calls": 12}, "judges no held-out prompts")):
        folder = tmp_path / str(budget["max_teacher_calls"])
        folder.mkdir()
        config, world = capped_config(folder, **budget)
        store = Store(folder / "evolve.db")
        line, _ = plan.first_line(config, 0, world, store, trainer=None, student=None)
        store.close()
        assert expected in line and "at most 25% of budget.max_teacher_calls" in line, line
