"""`evolvedirector judge-bench`, offline against the shapes judge and over HTTP against the server."""

import asyncio
import re

import numpy as np
import pytest
from typer.testing import CliRunner

from evolvedirector.cli import app
from evolvedirector.director import Verdict, build_director
from evolvedirector.bench.judge_bench import (
    bench_discrimination, bench_expansion, load_pairs, mean_cosine_distance, save_pairs, synthetic_pairs,
)
from evolvedirector.worlds.shapes.chat_server import ShapesChatServer
from evolvedirector.worlds.shapes.director import ShapesDirector
from evolvedirector.worlds.shapes.rules import is_correct

runner = CliRunner()
LAST_LINE = re.compile(r"^accuracy=(\d\.\d{4}) position_bias=(\d\.\d{4}) parse_failures=(\d+)$")


def last_line(output: str) -> tuple[float, float, int]:
    match = LAST_LINE.match(output.strip().splitlines()[-1])
    assert match, output
    return float(match.group(1)), float(match.group(2)), int(match.group(3))


def test_synthetic_pairs_are_labelled_exactly_and_round_trip(tmp_path):
    pairs = synthetic_pairs(8, seed=4)
    assert [p.preferred for p in pairs] == ["A", "B"] * 4
    for pair in pairs:
        better, worse = (pair.image_a, pair.image_b) if pair.preferred == "A" else (pair.image_b, pair.image_a)
        assert is_correct(pair.prompt, better) and not is_correct(pair.prompt, worse)
    loaded = load_pairs(save_pairs(pairs, tmp_path / "pairs"))
    assert [(p.prompt, p.preferred) for p in loaded] == [(p.prompt, p.preferred) for p in pairs]
    for a, b in zip(loaded, pairs):
        assert np.array_equal(a.image_a, b.image_a) and np.array_equal(a.image_b, b.image_b)


def test_figures_of_a_perfect_and_of_a_position_biased_judge():
    pairs = synthetic_pairs(10)
    perfect = asyncio.run(bench_discrimination(ShapesDirector(judge_accuracy=1.0), pairs, concurrency=4))
    assert (perfect.accuracy, perfect.position_bias, perfect.consistency) == (1.0, 0.5, 1.0)
    assert perfect.verdicts == 20 and len(perfect.latencies) == 20

    class AlwaysA(ShapesDirector):
        async def compare(self, prompt, image_a, image_b):
            await super().compare(prompt, image_a, image_b)
            return Verdict("A")

    biased = asyncio.run(bench_discrimination(AlwaysA(), pairs))
    assert (biased.accuracy, biased.position_bias, biased.consistency) == (0.5, 1.0, 0.0)


def test_expansion_validity_and_diversity():
    director = ShapesDirector(seed=0)
    result = asyncio.run(bench_expansion(director, ["three red circles", "the letter A in blue"], n=3,
                                         is_valid=lambda p: p.startswith(("two", "three", "four", "the letter"))))
    assert (result.requested, result.valid, result.validity, result.mutation_validity) == (6, 6, 1.0, 0.0)
    assert 0.0 < result.diversity_within <= result.diversity < 1.0
    same = np.ones((3, 4))
    assert mean_cosine_distance(same) == pytest.approx(0.0, abs=1e-9)
    assert mean_cosine_distance(np.eye(3)) == pytest.approx(1.0)


def test_cli_synthetic_with_the_shapes_judge():
    result = runner.invoke(app, ["judge-bench", "--synthetic", "--count", "24"])
    assert result.exit_code == 0, result.output
    accuracy, bias, failures = last_line(result.output)
    assert 0.7 <= accuracy <= 1.0 and 0.3 <= bias <= 0.7 and failures == 0
    assert "expansion: validity 1.000" in result.output and "throughput" in result.output


def test_cli_synthetic_over_http_and_from_a_pairs_file(tmp_path):
    with ShapesChatServer(judge_accuracy=1.0) as server:
        base = ["judge-bench", "--base-url", server.base_url, "--model", server.model]
        result = runner.invoke(app, [*base, "--synthetic", "--count", "12", "--save-pairs", str(tmp_path / "p")])
        assert result.exit_code == 0, result.output
        assert last_line(result.output) == (1.0, 0.5, 0)  # an exact judge, balanced labels
        assert "openai model 'shapes-judge'" in result.output
        from_file = runner.invoke(app, [*base, "--pairs", str(tmp_path / "p" / "pairs.jsonl")])
        assert from_file.exit_code == 0, from_file.output
        assert last_line(from_file.output) == (1.0, 0.5, 0) and "expansion" not in from_file.output


def test_cli_shows_a_position_bias_and_both_orders_cancelling_it(tmp_path):
    with ShapesChatServer(position_bias=1.0) as server:
        base = ["judge-bench", "--base-url", server.base_url, "--model", server.model, "--pairs"]
        pairs = str(save_pairs(synthetic_pairs(12), tmp_path))
        biased = runner.invoke(app, [*base, pairs])
        assert last_line(biased.output) == (0.5, 1.0, 0)
        cancelled = runner.invoke(app, [*base, pairs, "--both-orders"])
        accuracy, bias, _ = last_line(cancelled.output)
        assert 0.2 <= bias <= 0.8 and "consistent across the swap on 0." in cancelled.output


def test_cli_reads_the_director_from_a_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("director:\n  backend: shapes\n  judge_accuracy: 1.0\n")
    result = runner.invoke(app, ["judge-bench", "--config", str(config), "--synthetic", "--count", "8"])
    assert result.exit_code == 0, result.output
    assert last_line(result.output)[0] == 1.0
    config.write_text("director:\n  backend: openai\n  model: m\n")
    bad = runner.invoke(app, ["judge-bench", "--config", str(config), "--synthetic"])
    assert bad.exit_code == 2 and "director: " in bad.output and "needs base_url" in bad.output


@pytest.mark.parametrize("args, message", [
    ([], "give --pairs FILE, --prompts FILE or --synthetic"),
    (["--pairs", "missing.jsonl"], "does not exist"),
    (["--synthetic", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--mode", "listwise"], "director.mode"),
    (["--synthetic", "--mode", "pointwise"],
     "director: Value error, mode is only used by backends 'openai' and 'local'"),
    (["--synthetic", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--api-key-env", "NO_SUCH_KEY_VAR"],
     "NO_SUCH_KEY_VAR is not set"),
])
def test_cli_errors_name_the_problem(args, message):
    result = runner.invoke(app, ["judge-bench", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_a_server_that_is_down_is_an_error_not_a_crash(tmp_path):
    with ShapesChatServer() as server:
        url = server.base_url
    config = tmp_path / "director.yaml"
    config.write_text(f"backend: openai\nbase_url: {url}\nmodel: m\nretries: 1\nbackoff_s: 0.01\n")
    result = runner.invoke(app, ["judge-bench", "--config", str(config), "--synthetic", "--count", "2"])
    assert result.exit_code == 2 and "connection failed" in result.output


def test_build_director_rejects_an_unknown_backend():
    class Fake:
        backend = "telepathy"

    with pytest.raises(ValueError, match="unknown director backend 'telepathy'"):
        build_director(Fake(), seed=0)
