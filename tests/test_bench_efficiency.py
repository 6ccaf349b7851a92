import json
import math
import re

import pytest
from typer.testing import CliRunner

from evolvedirector.bench.efficiency import (
    CEILING, QUICK, Arm, Settings, best_naive_curve, calls_needed, loop_arm, naive_arm, run_arms,
)
from evolvedirector.cli import app
from evolvedirector.config import demo_config_path, load_config

TINY = Settings(ladder=(24, 48), steps=2, seeds=(0,), heldout_per_domain=2, ablation_budget=None, judge_accuracies=())


def test_calls_needed_interpolates_log_linearly_and_reports_bounds():
    ladder, curve = [100, 400, 1600], [0.1, 0.3, 0.2]  # the envelope is 0.1, 0.3, 0.3
    calls, bound = calls_needed(0.2, ladder, curve)
    assert bound == "" and calls == pytest.approx(math.exp((math.log(100) + math.log(400)) / 2))
    assert calls_needed(0.05, ladder, curve) == (100.0, "<=")
    assert calls_needed(0.5, ladder, curve) == (1600.0, ">=")


def test_naive_arm_buys_exactly_its_budget(tmp_path):
    result = naive_arm(24, "quill", 0, TINY, tmp_path)
    assert result.calls == 24 and result.dollars == pytest.approx(24 * 0.06)
    assert set(result.accuracy) == {"object", "relation", "count", "text", "mean"}


def test_ceiling_arm_trains_on_perfect_images_and_stays_off_the_naive_curve(tmp_path):
    ceiling = naive_arm(24, CEILING, 0, TINY, tmp_path)
    assert ceiling.arm == CEILING and ceiling.calls == 24 and ceiling.dollars == 0
    assert all(share == 1.0 for share in ceiling.label_accuracy.values())  # every image correct
    quill = naive_arm(24, "quill", 0, TINY, tmp_path)
    assert min(quill.label_accuracy.values()) < 1.0  # a teacher's images are not
    ceiling.accuracy = {**ceiling.accuracy, "mean": 1.0}
    quill.accuracy = {**quill.accuracy, "mean": 0.25}
    assert best_naive_curve([ceiling, quill], [24]) == [0.25]


@pytest.mark.parametrize("jobs", [1, 2])
def test_run_arms_starts_follow_up_arms_once_their_trigger_finishes(tmp_path, jobs):
    def follow_up(result):
        return [Arm(24, 0, "tally")] if result.arm == "naive-quill" else []

    arms = [Arm(24, 0, "quill"), Arm(24, 0, "atlas")]
    names = [r.arm for r in run_arms(arms, TINY, tmp_path, jobs, follow_up=follow_up)]
    assert sorted(names) == ["naive-atlas", "naive-quill", "naive-tally"]
    assert names.index("naive-tally") > names.index("naive-quill")


def test_loop_arm_stays_within_budget_and_trains_the_matched_steps(tmp_path):
    result = loop_arm(48, 0, TINY, tmp_path, rounds=2)
    assert result.calls <= 48
    assert set(result.selection) <= {"object", "relation", "count", "text"}
    for shares in result.selection.values():
        assert sum(shares.values()) == pytest.approx(1.0)


def test_command_prints_the_machine_readable_last_line(tmp_path):
    result = CliRunner().invoke(app, ["bench", "efficiency", "--quick", "--steps", "2", "--ladder", "24,48",
                                      "--out", str(tmp_path), "--jobs", "2"])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("efficiency ratio=") and " student=" in last and " best_teacher=" in last
    best_teacher = float(last.split("best_teacher=")[1])
    assert 0.6 < best_teacher < 0.8  # quill's table mean is 0.72
    assert (tmp_path / "results.json").exists() and (tmp_path / "efficiency.png").exists()
    assert QUICK.ablation_budget is None
    results = json.loads((tmp_path / "results.json").read_text())
    # Two budgets, each with the loop and every naive arm of --quick, from worker processes.
    assert sorted((r["arm"], r["budget"]) for r in results) == sorted(
        (arm, budget) for budget in (24, 48) for arm in ("loop", *(f"naive-{t}" for t in QUICK.naive_teachers)))
    for row in results:  # every arm's held-out mean with an interval that holds it, from its outcomes
        cell = row["intervals"]["mean"]
        assert cell["rate"] == pytest.approx(row["accuracy"]["mean"]) and cell["low"] <= cell["rate"] <= cell["high"]
        assert sum(map(len, row["outcomes"].values())) == 4 * QUICK.heldout_per_domain
    lines = result.output.strip().splitlines()
    assert lines[-4] == "headline:" and lines[-3].startswith("  R     = ") and lines[-2].startswith("  S - T = ")
    assert re.search(r"S - T = -?\d\.\d\d \[-?\d\.\d\d, -?\d\.\d\d\]", lines[-2])
    assert "the demo's student and recipe (shapes-xxs" in result.output


def test_resume_reruns_only_the_unfinished_arms_and_refuses_other_settings(tmp_path):
    quick = ["bench", "efficiency", "--quick", "--steps", "2", "--ladder", "24,48", "--out", str(tmp_path), "--jobs", "1"]
    runner = CliRunner()
    assert runner.invoke(app, quick).exit_code == 0
    results_file = tmp_path / "results.json"
    finished = json.loads(results_file.read_text())
    assert len(finished) == 4

    again = runner.invoke(app, quick)  # a second run into the same folder would overwrite it
    assert again.exit_code != 0 and "--resume" in again.output

    # As if the run had died before its last arm finished: that arm's result is missing.
    kept, lost = finished[:-1], finished[-1]
    results_file.write_text(json.dumps(kept))
    resumed = runner.invoke(app, [*quick, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "3 arms already done" in resumed.output
    arm_lines = [line for line in resumed.output.splitlines() if line.startswith("  ") and " B=" in line]
    assert len(arm_lines) == 1 and lost["arm"] in arm_lines[0]
    after = json.loads(results_file.read_text())
    assert after[:3] == kept  # the finished arms are kept as they were, not trained again
    assert (after[3]["arm"], after[3]["budget"]) == (lost["arm"], lost["budget"])
    assert resumed.output.strip().splitlines()[-1].startswith("efficiency ratio=")

    other = runner.invoke(app, [*quick[:3], "--steps", "3", *quick[5:], "--resume"])
    assert other.exit_code != 0 and "steps" in other.output

    # The recipe the arms trained is saved beside the settings: a demo.yaml changed since is refused ...
    settings_file = tmp_path / "settings.json"
    saved = json.loads(settings_file.read_text())
    assert saved["recipe"]["train.lr"] == load_config(demo_config_path()).train.lr
    assert saved["recipe"]["student.size"] == "shapes-xxs"
    settings_file.write_text(json.dumps({**saved, "recipe": {**saved["recipe"], "train.lr": 0.5}}))
    changed = runner.invoke(app, [*quick, "--resume"])
    assert changed.exit_code != 0 and "train.lr: 0.5 there" in changed.output
    # ... and one saved before the recipe was recorded resumes with today's, saying so.
    settings_file.write_text(json.dumps({k: v for k, v in saved.items() if k != "recipe"}))
    old = runner.invoke(app, [*quick, "--resume"])
    assert old.exit_code == 0, old.output
    assert "from before the recipe was recorded" in old.output
    assert "recipe" in json.loads(settings_file.read_text())


def test_gpu_profile_resolves_to_the_default_arms_at_a_gpu_batch_within_eight_minutes(tmp_path):
    from evolvedirector.bench.efficiency import (
        DEFAULT, GPU, GPU_JOBS, ablation_arms, base_config, gpu_estimate, main_arms, settings_from_options,
    )

    settings = settings_from_options(False, None, None, "gpu")
    assert settings == GPU
    assert (settings.device, settings.batch_size, settings.steps) == ("cuda", 256, 2000)
    # The default's arm set: the same ladder, seeds, teachers, ceiling and ablations.
    def arm_set(s):
        return sorted((a.name, a.budget, a.seed) for a in main_arms(s) + ablation_arms(s, 0.2))
    assert arm_set(settings) == arm_set(DEFAULT) and len(arm_set(settings)) == 26
    assert settings.batch_size * settings.steps > 3000 * 32  # more images than the CPU curve's 0.53 point
    config, demo = base_config(tmp_path, 0, settings), load_config(demo_config_path())
    # The demo's lr at its batch, scaled by the square root of the batch ratio; nothing else differs.
    assert (config.train.batch_size, config.device) == (256, "cuda")
    assert config.train.lr == pytest.approx(demo.train.lr * math.sqrt(256 / demo.train.batch_size))
    assert config.train.model_dump(exclude={"batch_size", "lr"}) == demo.train.model_dump(exclude={"batch_size", "lr"})
    assert config.student == demo.student
    assert gpu_estimate(settings, GPU_JOBS) <= 8 * 60
    assert settings_from_options(False, 500, None, "gpu").steps == 500
    # The CPU profiles are as they were.
    assert settings_from_options(False, None, None) == DEFAULT == settings_from_options(False, None, None, "default")
    assert settings_from_options(True, None, None) == QUICK


@pytest.mark.parametrize("profile", ["default", "quick"])
def test_the_cpu_profiles_train_the_demo_s_student_and_recipe_exactly(tmp_path, profile):
    from evolvedirector.bench.efficiency import PROFILES, base_config

    settings = PROFILES[profile]
    config, demo = base_config(tmp_path, 3, settings), load_config(demo_config_path())
    assert config.student == demo.student and config.train == demo.train
    assert config.train.low_res_steps > 0 and config.train.timestep_power != 1.0  # the demo's, not pinned off
    # Only the bench's own fields differ from the demo's config.
    assert (config.world.heldout_per_domain, config.evolve.evaluate_every_round, config.log_with) == (
        settings.heldout_per_domain, False, [])
    assert config.model_dump(exclude={"out", "seed", "world", "evolve", "log_with"}) == demo.model_dump(
        exclude={"out", "seed", "world", "evolve", "log_with"})


def test_the_default_runs_the_headline_arms_on_three_seeds_and_32_held_out_prompts():
    from evolvedirector.bench.efficiency import DEFAULT, main_arms

    assert DEFAULT.heldout_per_domain >= 32
    headline = {(a.name, a.seed) for a in main_arms(DEFAULT) if a.budget == DEFAULT.ladder[0]}
    for arm in ("loop", "naive-quill", "naive-random"):
        assert {seed for name, seed in headline if name == arm} >= {0, 1, 2}


def test_the_estimate_queues_the_ablations_behind_the_full_loop():
    from evolvedirector.bench.efficiency import DEFAULT, estimate_seconds

    one_at_a_time = estimate_seconds(DEFAULT, 1, 0.1, 10.0, 20.0)
    assert one_at_a_time == pytest.approx(26 * 1300 * 0.1 + 13 * 10.0 + 13 * 20.0)
    # Unlimited jobs: the full loop, then an ablation (a loop arm) after it.
    assert estimate_seconds(DEFAULT, 100, 0.1, 10.0, 20.0) == pytest.approx(2 * (130 + 20.0))


def test_gpu_profile_refuses_to_start_without_cuda(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(app, ["bench", "efficiency", "--profile", "gpu", "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and "needs a CUDA GPU" in result.output
    assert not (tmp_path / "out").exists()
    both = CliRunner().invoke(app, ["bench", "efficiency", "--quick", "--profile", "gpu"])
    assert both.exit_code != 0 and "--quick" in both.output
    unknown = CliRunner().invoke(app, ["bench", "efficiency", "--profile", "tpu"])
    assert unknown.exit_code != 0 and "--profile" in unknown.output


def made(arm, budget, seed, mean, calls=None, outcomes=None):
    from evolvedirector.bench.efficiency import Result

    return Result(arm, budget, seed, calls or budget, 0.0, {"mean": mean}, 1.0, outcomes=outcomes or {})


def test_an_arm_keeps_its_held_out_outcomes_and_intervals_that_contain_its_rates(tmp_path):
    result = naive_arm(24, "quill", 0, TINY, tmp_path)
    assert set(result.outcomes) == {"object", "relation", "count", "text"}
    assert all(len(v) == TINY.heldout_per_domain for v in result.outcomes.values())
    assert set(result.intervals) == set(result.accuracy)
    for key, cell in result.intervals.items():
        assert cell["rate"] == pytest.approx(result.accuracy[key])
        assert 0 <= cell["low"] <= cell["rate"] <= cell["high"] <= 1
    for domain, values in result.outcomes.items():
        assert result.accuracy[domain] == pytest.approx(sum(values) / len(values))


def test_all_correct_images_grade_one_with_the_interval_one_one():
    import random

    from evolvedirector.bench.efficiency import graded
    from evolvedirector.worlds.shapes.heldout import accuracy, heldout_prompts
    from evolvedirector.worlds.shapes.render import render

    prompts = heldout_prompts(4)
    images = [render(p, 32, random.Random(i)) for i, p in enumerate(prompts)]
    assert accuracy(prompts, images)["mean"] == 1.0  # the renderer's images are all correct
    grades = graded(prompts, images)
    assert all(cell == {"rate": 1.0, "low": 1.0, "high": 1.0} for cell in grades["intervals"].values())
    assert grades["accuracy"] == accuracy(prompts, images)


def test_mean_interval_is_a_t_interval_over_seeds_and_none_for_one_seed():
    from evolvedirector.evaluation.stats import mean_interval

    cell = mean_interval([2.0, 2.0, 4.0])
    half = 4.302653 * math.sqrt(4 / 3) / math.sqrt(3)  # t(0.975, 2 df) x sd / sqrt(n)
    assert cell["rate"] == pytest.approx(8 / 3)
    assert (cell["low"], cell["high"]) == pytest.approx((8 / 3 - half, 8 / 3 + half), rel=1e-5)
    assert mean_interval([0.5]) == {"rate": 0.5, "low": None, "high": None}
    assert mean_interval([0.3, 0.3, 0.3]) == pytest.approx({"rate": 0.3, "low": 0.3, "high": 0.3})


def test_paired_difference_interval_draws_the_same_prompts_for_both_sides():
    from evolvedirector.evaluation.stats import paired_difference_interval

    # Prompt for prompt the student does what the teacher does: no difference on any resample,
    # though either side alone varies a lot from prompt to prompt.
    same = paired_difference_interval({"object": [1, 0, 1, 0]}, {"object": [1.0, 0.0, 1.0, 0.0]})
    assert same == {"rate": 0.0, "low": 0.0, "high": 0.0}
    cell = paired_difference_interval({"a": [1, 1, 0, 0], "b": [1, 1, 1, 1]}, {"a": [0, 0, 0, 0], "b": [1, 0, 1, 0]})
    assert cell["rate"] == pytest.approx(0.5)  # (0.5 + 0.5) / 2: categories weighed equally
    assert cell["low"] < 0.5 < cell["high"]
    with pytest.raises(ValueError):
        paired_difference_interval({"a": [1, 0]}, {"a": [1.0]})


def test_headline_gives_r_per_seed_over_seeds_and_s_minus_t_over_prompts():
    from evolvedirector.bench.efficiency import headline, headline_lines

    ladder = [100, 400]
    student = {"object": [True, False, True, False], "count": [True, True, True, True]}
    results = [
        *(made("naive-quill", 100, seed, 0.1) for seed in (0, 1, 2)), made("naive-quill", 400, 0, 0.3),
        made("naive-random", 100, 0, 0.05), made("naive-random", 400, 0, 0.2),
        # Loop seeds 0 and 1 halfway (log-linearly) up the naive curve: 200 calls' worth; seed 2 at its top.
        made("loop", 100, 0, 0.2), made("loop", 100, 1, 0.2), made("loop", 100, 2, 0.3),
        made("loop", 400, 0, 0.75, outcomes=student),
    ]
    teachers = {"quill": {"object": [1.0, 0.0, 1.0, 0.0], "count": [0.5] * 4},
                "atlas": {"object": [0.0] * 4, "count": [0.25] * 4}}
    best = headline(results, ladder, 0, teachers)
    assert [(seed, bound) for seed, _, bound in best.ratios] == [(0, ""), (1, ""), (2, "")]
    assert [ratio for _, ratio, _ in best.ratios] == pytest.approx([2.0, 2.0, 4.0])
    half = 4.302653 * math.sqrt(4 / 3) / math.sqrt(3)
    assert best.ratio["rate"] == pytest.approx(8 / 3)
    assert (best.ratio["low"], best.ratio["high"]) == pytest.approx((8 / 3 - half, 8 / 3 + half), rel=1e-5)
    # quill's own mean 0.5 is the best; the student matches it prompt for prompt on objects and is
    # 0.5 above it on every count prompt, so S - T = 0.25 on every resample of the prompts.
    assert (best.best_teacher, best.student, best.teacher) == ("quill", 0.75, 0.5)
    assert best.gap == pytest.approx({"rate": 0.25, "low": 0.25, "high": 0.25})
    lines = headline_lines(best, ladder, 0)
    assert "2.67 [" in lines[1] and "t-interval over seeds" in lines[1]
    assert "0.25 [0.25, 0.25]" in lines[2] and "paired bootstrap over held-out prompts" in lines[2]


def test_the_plot_s_error_bars_are_each_mean_s_interval_over_prompts():
    from dataclasses import replace

    from evolvedirector.bench.efficiency import error_bars, from_outcomes

    halves = from_outcomes({d: [True, False, False, True] for d in ("object", "relation", "count", "text")})
    rows = [made("loop", 100, 0, 0.0), replace(made("loop", 400, 0, 0.0), **halves)]
    below, above = error_bars(rows)
    assert below[0] == 0 and above[0] == 0  # saved before outcomes were kept: nothing to draw
    span = rows[1].intervals["mean"]
    assert below[1] == pytest.approx(0.5 - span["low"]) and above[1] == pytest.approx(span["high"] - 0.5)
    assert below[1] > 0 and above[1] > 0


def test_a_result_saved_before_outcomes_were_kept_still_loads_and_summarizes(tmp_path):
    from dataclasses import asdict

    from evolvedirector.bench.efficiency import Result, headline, result_row

    row = asdict(made("loop", 400, 0, 0.4))
    del row["outcomes"], row["intervals"]
    old = Result(**row)
    assert old.outcomes == {} and old.intervals == {}
    assert result_row(old)[-1] == "0.40"  # the rate alone: there is nothing to draw an interval from
    results = [old, made("loop", 100, 0, 0.1), made("naive-quill", 100, 0, 0.1), made("naive-quill", 400, 0, 0.3)]
    best = headline(results, [100, 400], 0, {"quill": {"object": [0.5, 0.5]}})
    assert best.gap == {"rate": pytest.approx(-0.1), "low": None, "high": None}
    assert best.ratio["low"] is None  # one seed: no interval over seeds


def test_summarize_prints_every_mean_with_its_interval_and_the_seeds_table(tmp_path):
    from dataclasses import replace

    from rich.console import Console

    from evolvedirector.bench.efficiency import Result, from_outcomes, summarize
    from evolvedirector.evaluation.stats import format_rate

    settings = replace(TINY, seeds=(0, 1, 2), naive_teachers=("quill", "random"))
    domains = ("object", "relation", "count", "text")

    def arm(name, budget, seed, outcomes):
        return Result(name, budget, seed, budget, 1.0, seconds=1.0, **from_outcomes({d: outcomes for d in domains}))

    results = [arm(name, b, seed, [True, False] if name == "loop" else [False, True] if b == 48 else [False, False])
               for name in ("loop", "naive-quill", "naive-random") for b in (24, 48)
               for seed in ((0, 1, 2) if b == 24 else (0,))]
    console = Console(record=True, width=200)
    summarize(results, settings, tmp_path, console)
    text = console.export_text()
    for r in results:  # each arm's mean with its interval over prompts
        assert f"{r.arm}" in text and format_rate(r.intervals["mean"]) in text
    assert "headline arms across seeds" in text and "95% t" in text
    assert "0.50 [0.50, 0.50]" in text  # the loop's three equal seeds: no spread over seeds
    lines = text.strip().splitlines()
    assert lines[-4] == "headline:" and lines[-1].startswith("efficiency ratio=")
    # The loop at 24 calls matches naive distillation at 48: R = 2 on every seed.
    assert lines[-3].startswith("  R     = 2.00 [2.00, 2.00]")
