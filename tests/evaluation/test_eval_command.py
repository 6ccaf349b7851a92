"""`evolvedirector eval` on a tiny run: win rates, accuracy, selection, Fréchet, and the ledger."""

import json

import pytest
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.store import Store
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.heldout import heldout_prompts

runner = CliRunner()
TEACHERS = ("atlas", "quill", "tally")


def load(run_dir):
    return json.loads((run_dir / "eval" / "eval.json").read_text())


def test_eval_prints_and_saves_every_table(evaluated_run):
    run_dir, output = evaluated_run
    for title in ("student against each teacher", "held-out accuracy", "training samples per teacher",
                  "Fréchet distance", "FD-randconv"):
        assert title in output
    results = load(run_dir)
    prompts = heldout_prompts(2, 1234)  # the tiny run's held-out set
    assert [item["prompt"] for item in results["items"]] == prompts
    assert results["teachers"] == list(TEACHERS)
    assert results["checkpoint"] == "checkpoints/round-0002"
    assert results["fid"] is None  # no Inception network given
    assert set(results["frechet"]["values"]) == set(TEACHERS)
    assert all(value >= 0 for value in results["frechet"]["values"].values())


def test_win_rates_count_the_judged_pairs_per_domain(evaluated_run):
    results = load(evaluated_run[0])
    for teacher in TEACHERS:
        cells = results["win_rates"][teacher]
        assert list(cells) == [*grammar.DOMAINS, "all"]
        outcomes = [item["teachers"][teacher]["outcome"] for item in results["items"]]
        assert cells["all"]["n"] == len(outcomes) == 8
        for name in ("win", "tie", "lose"):
            cell = cells["all"][name]
            assert cell["rate"] == pytest.approx(outcomes.count(name) / 8)
            assert cell["low"] <= cell["rate"] <= cell["high"]
        for domain in grammar.DOMAINS:
            assert cells[domain]["n"] == 2
            assert sum(cells[domain][o]["rate"] for o in ("win", "tie", "lose")) == pytest.approx(1)


def test_accuracy_per_domain_for_the_student_and_each_teacher(evaluated_run):
    results = load(evaluated_run[0])
    assert set(results["accuracy"]) == {"student", *TEACHERS}
    for model, values in results["accuracy"].items():
        assert set(values) == {*grammar.DOMAINS, "mean"}
        flags = [item["student_correct"] if model == "student" else item["teachers"][model]["correct"]
                 for item in results["items"]]
        per_domain = [sum(flags[i:i + 2]) / 2 for i in range(0, 8, 2)]  # prompts come grouped by domain
        assert [values[d] for d in grammar.DOMAINS] == pytest.approx(per_domain)
    # At least one teacher draws most held-out prompts right (WORLD.md's profiles).
    assert max(results["accuracy"][t]["mean"] for t in TEACHERS) >= 0.5


def test_selection_shares_come_from_the_store(evaluated_run):
    run_dir = evaluated_run[0]
    results = load(run_dir)
    store = Store(run_dir / "evolve.db")
    counts = {(r["domain"], r["teacher"]): r["n"] for r in store.selection_counts()}
    store.close()
    assert {(r["domain"], r["teacher"]): r["samples"] for r in results["selection"]} == counts
    for domain in {r["domain"] for r in results["selection"]}:
        assert sum(r["share"] for r in results["selection"] if r["domain"] == domain) == pytest.approx(1)


def test_a_second_eval_reuses_every_teacher_image_and_pays_nothing(run_copy):
    store = Store(run_copy / "evolve.db")
    calls_before, dollars_before = store.spend()
    heldout = heldout_prompts(2, 1234)
    bought = store.conn.execute(
        f"SELECT COUNT(*) FROM teacher_calls WHERE prompt IN ({','.join('?' * len(heldout))})", heldout
    ).fetchone()[0]
    store.close()
    assert bought == 3 * len(heldout)  # the first eval bought each held-out image once per teacher

    result = runner.invoke(app, ["eval", str(run_copy), "--resamples", "50", "--one-order"])
    assert result.exit_code == 0, result.output
    assert "24 reused, 0 bought ($0.00)" in result.output
    results = load(run_copy)
    assert results["purchases"]["new_calls"] == 0 and results["purchases"]["reused"] == 24
    assert all(cell["tie"]["rate"] == 0 for cells in results["win_rates"].values() for cell in cells.values())
    store = Store(run_copy / "evolve.db")
    assert store.spend() == (calls_before, pytest.approx(dollars_before))
    store.close()


def test_eval_on_a_sample_of_the_training_set_reuses_its_images(run_copy):
    result = runner.invoke(app, ["eval", str(run_copy), "--prompts", "train", "--limit", "4", "--resamples", "20"])
    assert result.exit_code == 0, result.output
    results = load(run_copy)
    store = Store(run_copy / "evolve.db")
    active = {s.prompt: s for s in store.active_samples()}
    store.close()
    assert results["n_prompts"] == 4 and results["prompt_set"] == "train"
    for item in results["items"]:
        sample = active[item["prompt"]]
        # The image the sample trains on is the teacher's image this evaluation judged.
        assert item["teachers"][sample.teacher]["image"] == sample.image_hash
    assert results["purchases"]["reused"] >= 4


def test_help_lists_eval_and_ab():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and " eval " in result.output and " ab " in result.output


def test_eval_refuses_what_it_cannot_use(tmp_path, evaluated_run):
    result = runner.invoke(app, ["eval", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output
    result = runner.invoke(app, ["eval", str(evaluated_run[0]), "--prompts", str(tmp_path / "none.txt")])
    assert result.exit_code == 2 and "none.txt" in result.output and "'heldout', 'train'" in result.output
    bogus = tmp_path / "inception.pth"
    bogus.write_bytes(b"not a network")
    result = runner.invoke(app, ["eval", str(evaluated_run[0]), "--inception", str(bogus)])
    assert result.exit_code == 2
    assert "not a TorchScript file" in result.output and "torch-fidelity" in result.output
