"""`bench student`: the demo's recipe on perfect images, a curve per domain, a run folder left behind."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from evolvedirector.bench.student import recipe_config, parse_settings, training_set
from evolvedirector.cli import app
from evolvedirector.config import demo_config_path, load_config
from evolvedirector.evaluation.stats import accuracy_intervals
from evolvedirector.worlds.shapes.heldout import heldout_prompts
from evolvedirector.worlds.shapes.rules import is_correct

TINY = ["--steps", "4", "--eval-every", "2", "--heldout-per-domain", "2", "--draws", "1", "--train-images", "24",
        "--set", "student.size=tiny", "--set", "student.sample_steps=2", "--threads", "1"]


def test_the_curve_the_last_line_and_a_run_folder_that_sample_and_export_read(tmp_path):
    out = tmp_path / "ceiling"
    result = CliRunner().invoke(app, ["bench", "student", "--out", str(out), *TINY])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("student ceiling=") and " steps=4 secs=" in last
    curve = json.loads((out / "curve.json").read_text())
    assert [point["step"] for point in curve] == [2, 4]
    assert set(curve[-1]["accuracy"]) == {"object", "relation", "count", "text", "mean"}
    assert float(last.split("ceiling=")[1].split()[0]) == pytest.approx(curve[-1]["accuracy"]["mean"]["rate"], abs=5e-4)
    saved = load_config(out / "config.yaml")
    assert saved.student.size == "tiny" and saved.train == load_config(demo_config_path()).train

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle on the left\nthe letter T in blue\n")
    drawn = CliRunner().invoke(app, ["sample", str(out), "--prompts", str(prompts), "--out", str(tmp_path / "png")])
    assert drawn.exit_code == 0, drawn.output
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == ["00000.png", "00001.png"]
    exported = CliRunner().invoke(app, ["export", str(out), "--out", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    assert (tmp_path / "export" / "model_index.json").is_file()


def test_a_folder_that_holds_a_run_is_refused(tmp_path):
    out = tmp_path / "ceiling"
    out.mkdir()
    (out / "evolve.db").write_bytes(b"")  # a run's store: nothing of it may be overwritten
    again = CliRunner().invoke(app, ["bench", "student", "--out", str(out), *TINY], env={"COLUMNS": "300"})
    assert again.exit_code != 0 and "already holds a run" in again.output


def test_a_heldout_set_that_leaves_a_domain_nothing_to_train_on_is_refused(tmp_path):
    result = CliRunner().invoke(app, ["bench", "student", "--out", str(tmp_path / "x"), "--heldout-per-domain", "48"],
                                env={"COLUMNS": "300"})
    assert result.exit_code == 2 and "leaves 0 text prompts to train on" in result.output


def test_training_images_are_correct_and_never_held_out():
    heldout = heldout_prompts(8, 1234)
    prompts, images = training_set(200, set(heldout), 32, seed=3)
    assert not set(prompts) & set(heldout)
    assert all(is_correct(p, image) for p, image in zip(prompts, images))
    again, images_again = training_set(200, set(heldout), 32, seed=3)
    assert again == prompts and all(np.array_equal(a, b) for a, b in zip(images, images_again))


def test_recipe_settings_are_validated_by_name(tmp_path):
    config = recipe_config(tmp_path, 0, parse_settings(["train.lr=1e-3", "student.guidance=4"]))
    assert (config.train.lr, config.student.guidance) == (1e-3, 4.0)
    with pytest.raises(Exception, match="train.no_such_field"):
        recipe_config(tmp_path, 0, parse_settings(["train.no_such_field=1"]))
    with pytest.raises(Exception, match="section.field=value"):
        parse_settings(["lr=1e-3"])


def test_accuracy_intervals_hold_their_rates_and_weigh_categories_equally():
    outcomes = {"a": [True] * 30, "b": [True, False] * 15, "c": [False] * 10}
    result = accuracy_intervals(outcomes)
    assert result["a"] == {"rate": 1.0, "low": 1.0, "high": 1.0}
    assert result["c"] == {"rate": 0.0, "low": 0.0, "high": 0.0}
    assert result["b"]["low"] < 0.5 < result["b"]["high"]
    assert result["mean"]["rate"] == pytest.approx(0.5)  # (1 + 0.5 + 0) / 3, not 45 of 70 prompts
    assert result["mean"]["low"] < 0.5 < result["mean"]["high"]
    assert result["mean"]["high"] - result["mean"]["low"] < result["b"]["high"] - result["b"]["low"]
    with pytest.raises(ValueError):
        accuracy_intervals({"a": []})
