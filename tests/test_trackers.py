"""Experiment trackers (`log_with`): a tiny shapes run logs to TensorBoard, read back from its event
files and checked against the store; a run without trackers writes no logs."""

import io
from collections import Counter

import numpy as np
import pytest
import yaml
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import ConfigError, parse_config
from evolvedirector.loop import Evolution, tracking
from evolvedirector.store import Store
from tests.helpers import tiny_config

STEPS_PER_ROUND = 3  # tiny_config's train.steps_per_round
STALE_LOSS = 99.0


def read_events(run_dir, project="run") -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "logs" / project), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    return events


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    """Two rounds with TensorBoard on, interrupted after round 1: the events a crash left in the
    middle of round 2 (a stale loss at its steps) are there when the run resumes."""
    run_dir = tmp_path_factory.mktemp("tracked") / "run"
    Evolution(parse_config({**tiny_config(run_dir, max_rounds=1), "log_with": "tensorboard"})).run()
    stale = SummaryWriter(str(run_dir / "logs" / "run"))
    for step in (STEPS_PER_ROUND + 1, STEPS_PER_ROUND + 2):
        stale.add_scalar("train/loss", STALE_LOSS, global_step=step)
    stale.close()
    Evolution(parse_config({**tiny_config(run_dir, max_rounds=2), "log_with": "tensorboard"})).run()
    return run_dir


@pytest.fixture(scope="module")
def untracked_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("untracked") / "run"
    Evolution(parse_config(tiny_config(run_dir, max_rounds=2))).run()
    return run_dir


def scalars(events: EventAccumulator, tag: str) -> dict[int, float]:
    series = events.Scalars(tag)
    steps = [s.step for s in series]
    assert steps == sorted(set(steps)), f"{tag}: steps repeat or go back: {steps}"
    return {s.step: s.value for s in series}


def test_training_loss_and_lr_are_logged_per_step_across_the_resume(tracked_run):
    events = read_events(tracked_run)
    rows = Store(tracked_run / "evolve.db").rounds()
    loss = scalars(events, "train/loss")
    assert list(loss) == list(range(1, 2 * STEPS_PER_ROUND + 1))
    assert STALE_LOSS not in loss.values()  # the interrupted round's events are hidden, not doubled
    for row in rows[1:]:  # each round's logged losses average to the loss its row committed
        steps = range(row["train_step"] - STEPS_PER_ROUND + 1, row["train_step"] + 1)
        assert np.mean([loss[s] for s in steps]) == pytest.approx(row["metrics"]["loss"], rel=1e-5)
    # tiny_config: lr 1e-3 after 2 warm-up steps (the first step trains at 0, the second at half).
    assert scalars(events, "train/lr") == pytest.approx({1: 0.0, 2: 5e-4, 3: 1e-3, 4: 1e-3, 5: 1e-3, 6: 1e-3})


def test_round_metrics_match_the_store_at_each_rounds_last_step(tracked_run):
    events = read_events(tracked_run)
    store = Store(tracked_run / "evolve.db")
    rows = store.rounds()
    at = [row["train_step"] or 0 for row in rows]
    assert at == [0, STEPS_PER_ROUND, 2 * STEPS_PER_ROUND]
    refused = Counter(r["round"] for r in store.all_refusals())
    expected = {
        "round/round": [row["round"] for row in rows],
        "round/set_size": [row["set_size"] for row in rows],
        "round/added": [row["added"] for row in rows],
        "round/deleted": [row["deleted"] for row in rows],
        "round/mutated": [row["mutated"] for row in rows],
        "round/refused": [refused[row["round"]] for row in rows],
        "round/teacher_calls": [row["metrics"]["calls"] for row in rows],
        "round/spend_dollars": [row["metrics"]["dollars"] for row in rows],
        "heldout/mean": [row["metrics"]["accuracy"]["mean"] for row in rows],
        "heldout/object": [row["metrics"]["accuracy"]["object"] for row in rows],
    }
    for tag, values in expected.items():
        assert scalars(events, tag) == pytest.approx(dict(zip(at, values))), tag
    # Rounds after the seed round are judged; their teacher-win rate and mean loss are logged too.
    assert scalars(events, "round/teacher_win_rate") == pytest.approx(
        {row["train_step"]: row["teacher_wins"] / row["judged"] for row in rows[1:]})
    assert scalars(events, "round/mean_loss") == pytest.approx(
        {row["train_step"]: row["metrics"]["loss"] for row in rows[1:]})


def test_a_grid_of_the_graded_heldout_renders_is_logged_every_round(tracked_run):
    events = read_events(tracked_run)
    run = Evolution(parse_config({**tiny_config(tracked_run, max_rounds=2), "log_with": "tensorboard"}))
    heldout, rows = run.world.heldout, run.store.rounds()
    images = events.Images("validation/samples")
    assert [image.step for image in images] == [0, STEPS_PER_ROUND, 2 * STEPS_PER_ROUND]
    for image, row in zip(images, rows):
        grid = np.asarray(Image.open(io.BytesIO(image.encoded_image_string)).convert("RGB"))
        side, gap = run.config.world.image_size, 2
        tiles = [grid[(i // 8) * (side + gap):][:side, (i % 8) * (side + gap):][:, :side] for i in range(len(heldout))]
        # The tiles are the renders the round graded, in the held-out order: grading them again
        # gives the round's committed accuracy.
        assert run.world.grade(heldout, tiles) == pytest.approx(row["metrics"]["accuracy"])
    text = events.Tensors("validation/prompts/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.splitlines() == [f"{i}. {prompt}" for i, prompt in enumerate(heldout, 1)]


def test_the_saved_config_is_logged_as_hyperparameters(tracked_run):
    saved = yaml.safe_load((tracked_run / "config.yaml").read_text())
    [hparams_file, *_] = sorted((tracked_run / "logs" / "run").glob("*/hparams.yml"))
    logged = yaml.safe_load(hparams_file.read_text())
    assert logged["train.lr"] == saved["train"]["lr"] and logged["seed"] == saved["seed"]
    assert logged["log_with"] == '["tensorboard"]'


def test_tracking_changes_nothing_the_run_computes_and_no_logs_without_it(tracked_run, untracked_run):
    assert not (untracked_run / "logs").exists()
    keep = ("round", "set_size", "judged", "teacher_wins", "added", "deleted", "mutated", "train_step", "metrics")
    tracked = [{k: row[k] for k in keep} for row in Store(tracked_run / "evolve.db").rounds()]
    untracked = [{k: row[k] for k in keep} for row in Store(untracked_run / "evolve.db").rounds()]
    assert tracked == untracked


def test_hyperparameters_are_the_saved_config_without_secrets(monkeypatch, tmp_path):
    monkeypatch.setenv("IMAGES_API_KEY", "sk-test-secret-value-123")
    config = parse_config({**tiny_config(tmp_path / "run"), "teachers": [
        {"name": "remote", "backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m", "cost_per_image": 0.04,
         "api_key_env": "IMAGES_API_KEY"}]})
    flat = tracking.hparams(config)
    assert flat["out"] == str(tmp_path / "run") and flat["train.batch_size"] == 4
    assert "IMAGES_API_KEY" in flat["teachers"] and "sk-test-secret" not in str(flat)


def test_a_tracker_that_is_not_installed_is_refused_before_the_run_starts(monkeypatch, tmp_path):
    real_find_spec = tracking.find_spec
    monkeypatch.setattr(tracking, "find_spec", lambda name: None if name == "wandb" else real_find_spec(name))
    with pytest.raises(tracking.TrackerUnavailable, match="log_with: wandb needs the wandb package; install it"):
        Evolution(parse_config({**tiny_config(tmp_path / "run"), "log_with": ["tensorboard", "wandb"]}))
    assert not (tmp_path / "run").exists()

    config = tmp_path / "tracked.yaml"
    config.write_text(yaml.safe_dump({**tiny_config(tmp_path / "run"), "log_with": "wandb"}))
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == ["error: log_with: wandb needs the wandb package; install it with "
                                                  "pip install wandb (or leave wandb out of log_with)"]


def test_log_with_takes_a_name_a_list_or_nothing_and_refuses_unknown_names():
    assert parse_config({}).log_with == []
    assert parse_config({"log_with": None}).log_with == []
    assert parse_config({"log_with": "tensorboard"}).log_with == ["tensorboard"]
    assert parse_config({"log_with": ["tensorboard", "wandb"]}).log_with == ["tensorboard", "wandb"]
    for bad, field in (({"log_with": "tensorbord"}, "log_with.0"), ({"log_with": ["all"]}, "log_with.0"),
                       ({"log_project": "../elsewhere"}, "log_project")):
        with pytest.raises(ConfigError, match=f"  {field}: "):
            parse_config(bad)


def test_tile_lays_images_out_in_reading_order():
    images = [np.full((4, 4, 3), i, dtype=np.uint8) for i in range(10)]
    grid = tracking.tile(images, columns=4, gap=1)
    assert grid.shape == (3 * 5 - 1, 4 * 5 - 1, 3)
    assert grid[0, 0, 0] == 0 and grid[0, 5, 0] == 1 and grid[5, 0, 0] == 4 and grid[10, 5, 0] == 9
    assert grid[4, 0, 0] == 128 and grid[10, 10, 0] == 128  # gaps and the empty cells stay grey


def test_the_trainer_logs_each_step_when_its_loss_is_read_in_bursts(tmp_path):
    """sync_every 4 (as on a GPU): losses reach the trackers at the reads, each at its own step,
    numbered on across calls."""
    import torch

    from evolvedirector.bench.train import RandomCaptions
    from evolvedirector.config import StudentConfig, TrainConfig
    from evolvedirector.student import Student
    from evolvedirector.trainer import Trainer

    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", ema_decay=0.9), 32, text_encoder=RandomCaptions(16, 384))
    trainer = Trainer(student, TrainConfig(batch_size=2, lr=1e-3, warmup_steps=2), device="cpu", sync_every=4,
                      log_with=["tensorboard"], logging_dir=tmp_path)
    trainer.accelerator.init_trackers("bursts")
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    read: list[float] = []
    for steps in (6, 3):
        trainer.train(images, ["a red circle", "two blue squares"] * 2, steps, on_step=read.append)
    trainer.accelerator.end_training()
    events = EventAccumulator(str(tmp_path / "bursts"))
    events.Reload()
    assert scalars(events, "train/loss") == pytest.approx(dict(enumerate(read, 1)), rel=1e-6)
    assert scalars(events, "train/lr") == pytest.approx({1: 0.0, 2: 5e-4, **{s: 1e-3 for s in range(3, 10)}})


def test_the_standalone_trainer_logs_its_steps_as_a_run_of_its_own_across_a_resume(tmp_path):
    from evolvedirector.launch import main as launch
    from tests.trainer.helpers import make_run

    run = make_run(tmp_path / "run")
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "log_with": ["tensorboard"]}))
    launch([str(run), "--steps", "6", "--chunk", "2", "--stop-after", "4"])
    launch([str(run), "--steps", "6", "--chunk", "2"])
    events = read_events(run, project="run-trainer")
    assert list(scalars(events, "train/loss")) == [1, 2, 3, 4, 5, 6]
    assert scalars(events, "train/lr") == pytest.approx({1: 0.0, 2: 5e-4, 3: 1e-3, 4: 1e-3, 5: 1e-3, 6: 1e-3})


@pytest.mark.timeout(300)
def test_an_open_world_run_logs_a_grid_of_its_first_heldout_prompts_and_no_key(tmp_path, monkeypatch):
    """No exact grading there: the grid draws the first held-out prompts, only because a tracker
    is on; the teacher's API key, read from the environment, reaches no file under logs/."""
    from open_world_helpers import build_prompt_t5, write_prompt_file
    from tiny_models import build_tiny_vae

    from evolvedirector.testing.chat_server import OpenWorldChatServer
    from evolvedirector.testing.fake_images_api import FakeImageAPI

    key = "sk-test-trackers-0123456789"
    monkeypatch.setenv("EVOLVEDIRECTOR_TEST_KEY", key)
    t5, vae = build_prompt_t5(tmp_path / "t5"), build_tiny_vae(tmp_path / "vae")
    with FakeImageAPI(api_key=key) as api, OpenWorldChatServer(seed=3) as chat:
        run = Evolution(parse_config({
            "out": str(tmp_path / "run"), "seed": 2, "device": "cpu", "threads": 1,
            "world": {"name": "prompts", "prompts": str(write_prompt_file(tmp_path / "p.jsonl")),
                      "heldout_share": 0.2, "image_size": 32},
            "teachers": [{"name": "api", "backend": "openai", "base_url": f"{api.url}/v1", "model": "fake-image",
                          "api_key_env": "EVOLVEDIRECTOR_TEST_KEY", "cost_per_image": 0.01}],
            "director": {"backend": "openai", "base_url": chat.base_url, "model": "open-world-director", "retries": 1,
                         "backoff_s": 0.01, "concurrency": 1},
            "student": {"size": "tiny", "text_encoder": str(t5), "vae": str(vae), "max_tokens": 40,
                        "sample_steps": 2, "guidance": 2.0},
            "train": {"batch_size": 4, "lr": 1e-3, "warmup_steps": 1, "steps_per_round": 2},
            "evolve": {"seed_prompts": 8, "render_steps": 2},
            "budget": {"max_rounds": 1},
            "log_with": "tensorboard", "log_project": "open",
        }))
        run.run()

    events = read_events(tmp_path / "run", project="open")
    shown = run.world.heldout[:tracking.UNGRADED_PROMPTS]
    assert shown
    images = events.Images("validation/samples")
    assert [image.step for image in images] == [0, 2]
    columns = min(len(shown), tracking.GRID_COLUMNS)
    rows = -(-len(shown) // tracking.GRID_COLUMNS)
    assert (images[-1].width, images[-1].height) == (columns * 34 - 2, rows * 34 - 2)
    text = events.Tensors("validation/prompts/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert text.splitlines() == [f"{i}. {prompt}" for i, prompt in enumerate(shown, 1)]
    # No exact grades, but the director's held-out figure per category, inside its interval, each round.
    categories = {run.world.category(p) for p in run.world.heldout}
    assert {tag for tag in events.Tags()["scalars"] if tag.startswith("heldout/")} == {
        f"heldout/{c}" for c in (*categories, "mean")}
    for category in (*categories, "mean"):
        rates, lows, highs = (scalars(events, f"{kind}/{category}") for kind in ("heldout", "heldout_low", "heldout_high"))
        assert list(rates) == [0, 2]
        assert all(lows[s] <= rates[s] <= highs[s] and 0 <= rates[s] <= 1 for s in rates)
    assert list(scalars(events, "round/teacher_win_rate")) == [2]
    logged = b"".join(path.read_bytes() for path in (tmp_path / "run" / "logs").rglob("*") if path.is_file())
    assert b"EVOLVEDIRECTOR_TEST_KEY" in logged and key.encode() not in logged
