import json
import math

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
    assert arm_set(settings) == arm_set(DEFAULT) and len(arm_set(settings)) == 22
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


def test_the_estimate_queues_the_ablations_behind_the_full_loop():
    from evolvedirector.bench.efficiency import DEFAULT, estimate_seconds

    one_at_a_time = estimate_seconds(DEFAULT, 1, 0.1, 10.0, 20.0)
    assert one_at_a_time == pytest.approx(22 * 1300 * 0.1 + 10 * 10.0 + 12 * 20.0)
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
