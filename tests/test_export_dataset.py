"""`evolvedirector export-dataset`: a finished tiny run's curated set, loaded back with the
`datasets` package as a user would, row by row against the store; its card; bad input."""

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard, ModelCard
from PIL import Image
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.publish.cards import model_card
from evolvedirector.publish.dataset import typed_first
from evolvedirector.publish.facts import RunFacts
from evolvedirector.store import ImageStore, NewSample, RoundRecord, Store
from tests.helpers import tiny_config

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # before `datasets` is imported: nothing is fetched
REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """3 rounds judging the whole set: verdicts, deletions and a mutation to export."""
    folder = tmp_path_factory.mktemp("export-dataset")
    config = tiny_config(folder / "run", max_rounds=3)
    config["evolve"]["select_ratio"] = 1.0
    (folder / "tiny.yaml").write_text(yaml.safe_dump(config))
    result = runner.invoke(app, ["run", str(folder / "tiny.yaml")])
    assert result.exit_code == 0, result.output
    store = Store(folder / "run" / "evolve.db")
    samples = store.all_samples()
    store.close()
    assert any(s.round_deleted for s in samples) and any(s.operation == "mutate" for s in samples)
    return folder / "run"


def load(folder: Path, cache: Path):
    import datasets

    return datasets.load_dataset("imagefolder", data_dir=str(folder), split="train", cache_dir=str(cache))


def expected_rows(run: Path, at_round: int, with_deleted: bool) -> dict[int, dict]:
    """sample id -> what its row must say, read from the store without the exporter's code."""
    store = Store(run / "evolve.db")
    samples = {s.id: s for s in store.all_samples()}
    verdicts = store.all_verdicts()
    candidates = store.all_candidates()
    store.close()
    rows = {}
    for s in samples.values():
        deleted = s.round_deleted is not None and s.round_deleted <= at_round
        if s.round_added > at_round or (deleted and not with_deleted):
            continue
        judged = [v for v in verdicts if v["sample_id"] == s.id and v["round"] <= at_round]
        rows[s.id] = {
            "prompt": s.prompt, "category": s.domain, "teacher": s.teacher, "operation": s.operation,
            "chosen_among": sorted(c["teacher"] for c in candidates if c["sample_id"] == s.id) or [s.teacher],
            "round_added": s.round_added, "round_deleted": s.round_deleted if deleted else None,
            "parent_id": s.parent_id, "parent_prompt": samples[s.parent_id].prompt if s.parent_id else None,
            "verdicts": {"round": [v["round"] for v in judged], "winner": [v["winner"] for v in judged],
                         "action": [v["action"] for v in judged],
                         "student_shown_first": [bool(v["student_shown_first"]) for v in judged]},
            "image_hash": s.image_hash,
        }
    return rows


def check_against_store(dataset, run: Path, at_round: int, with_deleted: bool) -> None:
    expected = expected_rows(run, at_round, with_deleted)
    assert sorted(dataset["sample_id"]) == sorted(expected)
    images = ImageStore(run / "images")
    for row in dataset:
        want = expected[row["sample_id"]]
        for field in ("prompt", "category", "teacher", "operation", "round_added", "round_deleted", "parent_id",
                      "parent_prompt", "verdicts"):
            assert row[field] == want[field], (row["sample_id"], field)
        assert sorted(row["chosen_among"]) == want["chosen_among"]
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), images.get(want["image_hash"]))


def test_the_set_with_its_deleted_samples_loads_with_datasets_as_the_store_holds_it(run_dir, tmp_path):
    out = tmp_path / "set"
    result = runner.invoke(app, ["export-dataset", str(run_dir), "--out", str(out), "--with-deleted"])
    assert result.exit_code == 0, result.output
    dataset = load(out, tmp_path / "cache")
    check_against_store(dataset, run_dir, 3, with_deleted=True)
    assert any(r is not None for r in dataset["round_deleted"]) and any(dataset["parent_prompt"])
    assert "mutate" in dataset["operation"] and any(v["winner"] for v in dataset["verdicts"])
    store = Store(run_dir / "evolve.db")
    assert f": {len(store.active_samples())} images and " in result.output
    store.close()


def test_an_earlier_round_is_its_own_version_of_the_set(run_dir, tmp_path):
    out = tmp_path / "round-1"
    result = runner.invoke(app, ["export-dataset", str(run_dir), "--out", str(out), "--round", "1"])
    assert result.exit_code == 0, result.output
    dataset = load(out, tmp_path / "cache")
    check_against_store(dataset, run_dir, 1, with_deleted=False)
    store = Store(run_dir / "evolve.db")
    assert sorted(dataset["sample_id"]) == [s.id for s in store.active_samples(at_round=1)]
    later = {s.id for s in store.all_samples() if s.round_deleted and s.round_deleted > 1 and s.round_added <= 1}
    store.close()
    assert later and all(r["round_deleted"] is None for r in dataset if r["sample_id"] in later)  # nothing after 1
    assert all(max(v["round"], default=0) <= 1 for v in dataset["verdicts"])


def test_the_dataset_card_says_how_the_set_was_made(run_dir, tmp_path):
    out = tmp_path / "set"
    assert runner.invoke(app, ["export-dataset", str(run_dir), "--out", str(out)]).exit_code == 0
    card = DatasetCard.load(out / "README.md")
    assert card.data.license == "apache-2.0" and card.data.task_categories == ["text-to-image"]
    store = Store(run_dir / "evolve.db")
    last = store.rounds()[-1]
    active = len(store.active_samples())
    store.close()
    text = card.text
    for teacher in ("atlas", "quill", "tally"):
        assert f"- {teacher}: a shapes-world teacher" in text
    assert "synthetic judge" in text and "generated by EvolveDirector's shapes world" in text
    assert f"{last['metrics']['calls']} teacher calls, ${last['metrics']['dollars']:.2f}, by the end of round 3" in text
    assert "the seed round (12 random prompts) and 3 rounds of 3 training steps" in text
    assert f"after round 3: {active} prompts" in text
    assert 'load_dataset("imagefolder"' in text


def test_bad_input_is_refused_in_one_line(run_dir, tmp_path):
    def refused(*args):
        result = runner.invoke(app, ["export-dataset", *map(str, args)])
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
        return result.output

    assert "is not a run folder" in refused(tmp_path, "--out", tmp_path / "a")
    assert "--round 7 is not a committed round" in refused(run_dir, "--out", tmp_path / "b", "--round", "7")
    assert "(committed: 0 to 3)" in refused(run_dir, "--out", tmp_path / "b", "--round", "-1")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "mine.txt").write_text("keep me")
    assert "not an empty folder" in refused(run_dir, "--out", taken)
    assert [p.name for p in taken.iterdir()] == ["mine.txt"] and (taken / "mine.txt").read_text() == "keep me"
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_a_failed_export_leaves_no_folder(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    store = Store(run / "evolve.db")
    victim = store.active_samples()[-1]
    store.close()
    image = ImageStore(run / "images").path(victim.image_hash)
    image.write_bytes(image.read_bytes()[:-10])  # a corrupt image: the export must not pass it on
    result = runner.invoke(app, ["export-dataset", str(run), "--out", str(tmp_path / "set")])
    assert result.exit_code == 2, result.output
    assert f"sample {victim.id}" in result.output and "does not match its hash" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # neither the folder nor its staging copy


def test_sparse_columns_get_a_value_within_what_datasets_reads_first():
    def row(i, **values):
        return {"sample_id": i, "round_deleted": None, "parent_id": None, "parent_prompt": None,
                "verdicts": {"round": [], "winner": []}, **values}

    rows = [row(i) for i in range(100)]
    rows[60] = row(60, parent_id=3, parent_prompt="a red circle")
    rows[80] = row(80, verdicts={"round": [2], "winner": ["teacher"]})
    ordered = typed_first(rows, first_read=1000)
    assert [r["sample_id"] for r in ordered[:2]] == [60, 80]  # round_deleted has no value anywhere: nothing moves
    assert [r["sample_id"] for r in ordered[2:]] == [i for i in range(100) if i not in (60, 80)]
    assert [r["sample_id"] for r in typed_first(rows)] == list(range(100))  # all of it is read first: id order


def prompt_world_run(folder: Path) -> Path:
    """A prompt-file run as the loop leaves it after its seed round, with a teacher and a director
    at private addresses, their keys in the environment: none of it may reach a card."""
    folder.mkdir()
    config = {
        "out": str(folder),
        "world": {"name": "prompts", "prompts": str(REPO / "prompts" / "PartiPrompts.tsv")},
        "teachers": [{"name": "api", "backend": "openai", "model": "gpt-image-1", "cost_per_image": 0.04,
                      "base_url": "https://images.internal.example.com/v1", "api_key_env": "CARD_TEST_KEY"}],
        "director": {"backend": "openai", "base_url": "http://127.0.0.1:8000/v1", "model": "Qwen/Qwen2-VL-7B-Instruct",
                     "api_key_env": "CARD_TEST_DIRECTOR_KEY"},
        "budget": {"max_rounds": 1},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    digest = ImageStore(folder / "images").put(np.full((32, 32, 3), 200, dtype=np.uint8))
    store = Store(folder / "evolve.db")
    store.commit_round(RoundRecord(round=0, started_at=time.time(), new_samples=[
        NewSample(prompt="a bowl of soup", domain="Food & Beverage", operation="seed", teacher="api",
                  image_hash=digest)], metrics={"calls": 1, "dollars": 0.04}))
    store.close()
    return folder


def test_prompt_file_cards_pass_its_license_on_and_keep_secrets_out(tmp_path, monkeypatch):
    monkeypatch.setenv("CARD_TEST_KEY", "sk-card-test-secret-1234")
    monkeypatch.setenv("CARD_TEST_DIRECTOR_KEY", "sk-card-test-director-5678")
    run = prompt_world_run(tmp_path / "run")
    result = runner.invoke(app, ["export-dataset", str(run), "--out", str(tmp_path / "set")])
    assert result.exit_code == 0, result.output
    license_text = (REPO / "prompts" / "PartiPrompts.LICENSE").read_text()
    assert (tmp_path / "set" / "PartiPrompts.LICENSE").read_text() == license_text
    dataset = load(tmp_path / "set", tmp_path / "cache")
    assert dataset["prompt"] == ["a bowl of soup"] and dataset["category"] == ["Food & Beverage"]
    card = DatasetCard.load(tmp_path / "set" / "README.md")
    assert card.data.license == "FILL-IN"
    assert "the prompt file PartiPrompts.tsv, apache-2.0" in card.text and "`PartiPrompts.LICENSE`" in card.text
    assert "api: an OpenAI images API, model gpt-image-1, $0.040 an image" in card.text
    assert "Qwen/Qwen2-VL-7B-Instruct" in card.text
    store = Store(run / "evolve.db")
    model = model_card(RunFacts.read(run, store), parameters=1_000_000)
    store.close()
    assert ModelCard(model).data.license == "FILL-IN"
    for text in (card.content, model):
        for secret in ("internal.example.com", "127.0.0.1", "sk-card-test", "CARD_TEST"):
            assert secret not in text
    for saved in (tmp_path / "set").iterdir():
        if saved.suffix in (".md", ".jsonl"):
            assert "example.com" not in saved.read_text() and "sk-card-test" not in saved.read_text()


def test_cli_output_points_at_the_card(run_dir, tmp_path):
    out = tmp_path / "set"
    result = runner.invoke(app, ["export-dataset", str(run_dir), "--out", str(out)])
    assert "metadata.jsonl and README.md" in result.output
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    assert [r["sample_id"] for r in rows] == sorted(r["sample_id"] for r in rows)  # a small set stays in id order
    assert all((out / r["file_name"]).is_file() and r["file_name"] == f"{r['sample_id']:08d}.png" for r in rows)
    assert len(list(out.glob("*.png"))) == len(rows)
    assert Image.open(out / rows[0]["file_name"]).size == (32, 32)


def test_the_cards_say_what_spend_may_not_have_been_billed(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    store = Store(run / "evolve.db")
    with store.conn:  # a call in flight when a run died, made again on resume (as the ledger records it)
        store.conn.execute("UPDATE teacher_calls SET remade = 1, price = 0.04 WHERE rowid = "
                           "(SELECT MIN(rowid) FROM teacher_calls)")
    store.close()
    assert runner.invoke(app, ["export-dataset", str(run), "--out", str(tmp_path / "set")]).exit_code == 0
    unsure = ("of the run's whole spend, up to $0.04 (1 call in flight when a run died, made again on resume) "
              "may not have been billed")
    assert unsure in DatasetCard.load(tmp_path / "set" / "README.md").text
    assert runner.invoke(app, ["export-dataset", str(run_dir), "--out", str(tmp_path / "clean")]).exit_code == 0
    assert "may not have been billed" not in (tmp_path / "clean" / "README.md").read_text()
