"""Export round trip: the exported folder draws what the student drew, through diffusers too."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from student_helpers import randomised
from PIL import Image
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.config import StudentConfig
from evolvedirector.student import Student
from evolvedirector.student.export import export_student
from evolvedirector.student.pipeline import EvolveDirectorPipeline, load_export

PROMPTS = ["a red circle on the left", "two blue squares"]
runner = CliRunner()


@pytest.fixture(scope="module")
def shapes_student():
    torch.manual_seed(0)
    student = Student(StudentConfig(size="tiny", guidance=3.0), 32)
    randomised(student.ema_model)
    return student


@pytest.fixture(scope="module")
def shapes_export(shapes_student, tmp_path_factory):
    return export_student(shapes_student, tmp_path_factory.mktemp("export") / "student")


def test_the_folder_describes_itself(shapes_export):
    index = json.loads((shapes_export / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline", "EvolveDirectorPipeline"]
    assert index["transformer"] == ["evolvedirector.student.transformer", "QKNormPixArtTransformer2DModel"]
    assert index["vae"] == [None, None] and index["max_sequence_length"] == 16 and index["guidance_scale"] == 3.0
    shim = (shapes_export / "pipeline.py").read_text()
    assert "from evolvedirector.student.pipeline import EvolveDirectorPipeline" in shim
    for part in ("transformer", "scheduler", "text_encoder", "tokenizer"):
        assert (shapes_export / part).is_dir(), part


def test_the_export_draws_the_students_images(shapes_student, shapes_export):
    expected = shapes_student.generate(PROMPTS, seed=3, steps=4)
    pipe = load_export(shapes_export)
    drawn = pipe(PROMPTS, num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="np").images
    for a, b in zip(expected, drawn):
        np.testing.assert_array_equal(a, b)
    other_seed = pipe(PROMPTS, num_inference_steps=4, generator=torch.Generator().manual_seed(4), output_type="np")
    assert not np.array_equal(other_seed.images[0], drawn[0])


def test_diffusers_loads_the_folder_in_a_fresh_process(shapes_student, shapes_export, tmp_path):
    # A new interpreter that never imports evolvedirector itself: the folder says what to load.
    script = f"""
import numpy as np, sys, torch
from diffusers import DiffusionPipeline
pipe = DiffusionPipeline.from_pretrained({str(shapes_export)!r}, trust_remote_code=True)
image = pipe("a red circle on the left", num_inference_steps=20).images[0]
assert image.size == (32, 32), image.size
seeded = pipe({PROMPTS!r}, num_inference_steps=4, generator=torch.Generator().manual_seed(3), output_type="np")
np.save({str(tmp_path / "drawn.npy")!r}, np.stack(seeded.images))
print(type(pipe).__name__, type(image).__name__)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "modules")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "EvolveDirectorPipeline Image" in done.stdout
    expected = np.stack(shapes_student.generate(PROMPTS, seed=3, steps=4))
    np.testing.assert_array_equal(np.load(tmp_path / "drawn.npy"), expected)


def test_diffusers_asks_before_running_the_folders_code(shapes_export):
    from diffusers import DiffusionPipeline

    with pytest.raises(ValueError, match="trust_remote_code"):
        DiffusionPipeline.from_pretrained(shapes_export)


def test_a_latent_t5_student_exports_with_its_vae_at_any_shape(tiny_t5, tiny_vae, tmp_path):
    torch.manual_seed(0)
    config = StudentConfig(size="tiny-ms", text_encoder=str(tiny_t5), vae=str(tiny_vae), max_tokens=12,
                           size_conditioning=True, prediction_type="epsilon", beta_schedule="linear")
    student = Student(config, 32)
    randomised(student.ema_model)
    folder = export_student(student, tmp_path / "latent")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "T5EncoderModel"]
    pipe = load_export(folder)
    assert isinstance(pipe, EvolveDirectorPipeline) and pipe.transformer.use_additional_conditions
    expected = student.generate(PROMPTS, seed=5, steps=3, height=32, width=64)
    drawn = pipe(PROMPTS, num_inference_steps=3, height=32, width=64, generator=torch.Generator().manual_seed(5),
                 output_type="np").images
    assert drawn[0].shape == (32, 64, 3)
    for a, b in zip(expected, drawn):
        np.testing.assert_array_equal(a, b)


def test_export_refuses_to_overwrite(shapes_student, shapes_export):
    with pytest.raises(FileExistsError, match="choose another --out"):
        export_student(shapes_student, shapes_export)


def fake_run(folder, student):
    """A run folder as the loop leaves it after one round: config, store row, checkpoint."""
    from evolvedirector.store import Store
    from evolvedirector.store.db import RoundRecord

    folder.mkdir()
    config = {"out": str(folder), "world": {"image_size": 32},
              "student": {"size": "tiny", "guidance": 3.0, "sample_steps": 4}, "budget": {"max_rounds": 1}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    student.save_weights(folder / "checkpoints" / "round-0001")
    store = Store(folder / "evolve.db")
    store.commit_round(RoundRecord(round=0, started_at=time.time(), checkpoint="checkpoints/round-0001"))
    store.close()
    return folder


def test_export_and_sample_commands_agree(shapes_student, tmp_path):
    run_dir = fake_run(tmp_path / "run", shapes_student)
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    for source, out in ((run_dir, "from-run"), (tmp_path / "exported", "from-export")):
        result = runner.invoke(app, ["sample", str(source), "--prompts", str(prompts), "--out", str(tmp_path / out),
                                     "--seed", "2", "--width", "64"])
        assert result.exit_code == 0, result.output
    for index in range(len(PROMPTS)):
        from_run = np.asarray(Image.open(tmp_path / "from-run" / f"{index:05d}.png"))
        from_export = np.asarray(Image.open(tmp_path / "from-export" / f"{index:05d}.png"))
        assert from_run.shape == (32, 64, 3)
        np.testing.assert_array_equal(from_run, from_export)
    again = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "exported")])
    assert again.exit_code == 2 and "not an empty folder" in again.output


def test_convert_pth_command_writes_an_init_from_folder(tmp_path):
    from test_student_convert import OfficialPixArtMS

    from evolvedirector.student.transformer import QKNormPixArtTransformer2DModel

    state = randomised(OfficialPixArtMS()).state_dict()
    torch.save({"state_dict": state}, tmp_path / "model.pth")
    result = runner.invoke(app, ["convert-pth", str(tmp_path / "model.pth"), "--out", str(tmp_path / "converted"),
                                 "--size", "tiny-ms"])
    assert result.exit_code == 0, result.output
    model = QKNormPixArtTransformer2DModel.from_pretrained(tmp_path / "converted")
    assert torch.equal(model.proj_out.weight, state["final_layer.linear.weight"])
    wrong = runner.invoke(app, ["convert-pth", str(tmp_path / "model.pth"), "--out", str(tmp_path / "x"),
                                "--size", "B/2"])
    assert wrong.exit_code == 2 and "the size asked for is depth 12" in wrong.output


def test_the_export_carries_a_model_card(shapes_student, tmp_path):
    from huggingface_hub import ModelCard

    from evolvedirector.evaluation.stats import outcome_rates
    from evolvedirector.store import Store
    from evolvedirector.store.db import RoundRecord

    run_dir = fake_run(tmp_path / "run", shapes_student)
    store = Store(run_dir / "evolve.db")
    store.commit_round(RoundRecord(round=1, started_at=time.time(), train_step=40, checkpoint="checkpoints/round-0001",
                                   metrics={"accuracy": {"object": 0.75, "text": 0.25, "mean": 0.5}, "calls": 30,
                                            "dollars": 1.2}))
    store.close()
    (run_dir / "eval").mkdir()
    (run_dir / "eval" / "eval.json").write_text(json.dumps({
        "round": 1, "n_prompts": 4, "prompt_set": "heldout", "items": [], "fid": None,
        "win_rates": {"atlas": {"all": outcome_rates(["win", "lose", "lose", "tie"], resamples=50)}},
        "accuracy": {"student": {"object": 0.5, "mean": 0.5}, "atlas": {"object": 1.0, "mean": 1.0}},
        "frechet": {"feature": "FD-randconv", "values": {"atlas": 12.5}},
    }))
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "exported")])
    assert result.exit_code == 0, result.output
    card = ModelCard.load(tmp_path / "exported" / "README.md")
    assert card.data.license == "FILL-IN"  # the run cannot know it: the user must choose
    assert (card.data.library_name, card.data.pipeline_tag) == ("diffusers", "text-to-image")
    parameters = sum(p.numel() for p in shapes_student.ema_model.parameters())
    text = card.text
    assert f"size `tiny`, {parameters / 1e6:.2f}M parameters" in text
    assert "**Initialised from**: a random initialisation" in text
    assert "the EMA weights of round 1, after 40 optimizer steps" in text
    assert "atlas: a shapes-world teacher (the project's own renderer), $0.040 an image" in text
    assert "synthetic judge" in text and "30 teacher calls, $1.20, by the end of round 1" in text
    assert "| object | text | mean |" in text and "| 0.75 | 0.25 | 0.50 |" in text
    assert "| atlas | 4 | 0.25 [" in text and "FD-randconv of the student's images against each teacher's" in text
    assert "## License" in text and "**Fill in** `license`" in text
