import json
import logging
import random
from collections import Counter
from pathlib import Path

import pytest

from evolvedirector.config import RunConfig, WorldConfig
from evolvedirector.worlds.base import OTHER, Accepted, Refused
from evolvedirector.worlds.prompts import PromptFileError, PromptsWorld, read_prompt_file
from evolvedirector.worlds.prompts.files import PromptRecord
from evolvedirector.worlds.prompts.proposals import DUPLICATE, HELD_OUT, normalise
from evolvedirector.worlds.prompts.world import split_heldout

PARTI = Path(__file__).resolve().parents[2] / "prompts" / "PartiPrompts.tsv"


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def _pairs(path: Path) -> list[tuple[str, str]]:
    return [(r.prompt, r.category) for r in read_prompt_file(path)]


# ---- layouts ---------------------------------------------------------------------------------


def test_txt_one_prompt_per_line_blank_lines_skipped(tmp_path):
    path = _write(tmp_path, "p.txt", "\ufeffa red cube\n\n  a blue ball  \r\n   \nan owl\n")
    records = read_prompt_file(path)
    assert [(r.prompt, r.category, r.line) for r in records] == [
        ("a red cube", OTHER, 1), ("a blue ball", OTHER, 3), ("an owl", OTHER, 5),
    ]


def test_tsv_with_any_case_columns_and_extra_ones(tmp_path):
    path = _write(tmp_path, "p.tsv", "Note\tPROMPT\tCategory\nx\ta cat\tAnimals\ny\ta cup\t \n")
    assert _pairs(path) == [("a cat", "Animals"), ("a cup", OTHER)]


def test_tsv_keeps_a_leading_quoted_word_and_unquotes_a_quoted_cell(tmp_path):
    path = _write(tmp_path, "p.tsv", 'prompt\n"HELLO" painted on a wall\n"a sign that says ""hi"""\n')
    assert [p for p, _ in _pairs(path)] == ['"HELLO" painted on a wall', 'a sign that says "hi"']


def test_csv_with_quoted_commas_and_a_tag_column(tmp_path):
    path = _write(tmp_path, "p.csv", 'prompt,tag\n"a cat, a dog, and a bird",Animals\na lamp,\n')
    assert _pairs(path) == [("a cat, a dog, and a bird", "Animals"), ("a lamp", OTHER)]


def test_jsonl_with_category_or_tag(tmp_path):
    lines = [{"prompt": "a cat", "category": "Animals"}, {"prompt": "a car", "tag": "Vehicles"},
             {"prompt": "a cloud", "category": None}, {"prompt": "a lamp", "category": "  "}]
    path = _write(tmp_path, "p.jsonl", "\n".join(json.dumps(line) for line in lines[:2]) + "\n\n"
                  + "\n".join(json.dumps(line) for line in lines[2:]))
    records = read_prompt_file(path)
    assert [(r.prompt, r.category, r.line) for r in records] == [
        ("a cat", "Animals", 1), ("a car", "Vehicles", 2), ("a cloud", OTHER, 4), ("a lamp", OTHER, 5),
    ]


def test_partiprompts_as_shipped(caplog):
    with caplog.at_level(logging.WARNING):
        records = read_prompt_file(PARTI)
    # 1632 rows; lines 322 and 335 are one prompt a final period apart, so the second is skipped.
    assert len(records) == 1631
    assert len({r.category for r in records}) == 12
    assert "line 335" in caplog.text and "first on line 322" in caplog.text
    assert any(r.prompt.startswith('"G I G G L E" painted') for r in records)


# ---- bad files -------------------------------------------------------------------------------


@pytest.mark.parametrize("name, content, expected", [
    ("p.tsv", "text\tcategory\na cat\tAnimals\n", ['line 1', 'no "prompt" column', '"text", "category"']),
    ("p.tsv", "", ["empty file"]),
    ("p.csv", "prompt,category\n", ["no prompts"]),
    ("p.txt", "\n  \n", ["no prompts"]),
    ("p.txt", b"a cat\na dog\na \xff cow\n", ["line 3", "not UTF-8", "0xff"]),
    ("p.tsv", "prompt\tcategory\nA Cat!\tAnimals\na dog\tAnimals\na cat\tPets\n",
     ["line 4", 'duplicate prompt "a cat"', "first on line 2"]),
    ("p.csv", "prompt,category\na cat,Animals\n  ,Animals\n", ["line 3", "empty prompt"]),
    ("p.txt", "a cat\na\x07dog\n", ["line 2", "control character U+0007"]),
    ("p.txt", "a cat\n...!\n", ["line 2", "only punctuation or symbols"]),
    ("p.jsonl", '{"prompt": "a cat"}\n["a dog"]\n', ["line 2", "not a JSON object"]),
    ("p.jsonl", '{"prompt": "a cat"}\n\n{"prompt": 3}\n', ["line 3", 'no "prompt" string']),
    ("p.jsonl", '{"prompt": "a cat"}\n{"prompt": "a dog",\n', ["line 2", "not JSON"]),
    ("p.jsonl", '{"prompt": "a cat", "tag": 7}\n', ["line 1", '"tag" is not a string']),
    ("p.xlsx", "prompt\n", ["unsupported suffix '.xlsx'", ".txt, .tsv, .csv, .jsonl"]),
])
def test_bad_files_name_the_file_the_line_and_the_problem(tmp_path, name, content, expected):
    path = _write(tmp_path, name, content)
    with pytest.raises(PromptFileError) as error:
        read_prompt_file(path)
    message = str(error.value)
    assert name in message
    for part in expected:
        assert part in message


def test_a_missing_file(tmp_path):
    with pytest.raises(PromptFileError, match="nope.txt: no such file"):
        read_prompt_file(tmp_path / "nope.txt")


def test_a_variant_repeated_in_the_same_category_is_skipped_with_both_lines_named(tmp_path, caplog):
    path = _write(tmp_path, "p.txt", "a red cube\nan owl\nA red cube.\n")
    with caplog.at_level(logging.WARNING):
        assert [p for p, _ in _pairs(path)] == ["a red cube", "an owl"]
    assert "p.txt line 3" in caplog.text and "first on line 1" in caplog.text


# ---- the world built from files ----------------------------------------------------------------


def _records(counts: dict[str, int]) -> list[PromptRecord]:
    records = [(f"{category} prompt {i}", category) for category, n in counts.items() for i in range(n)]
    return [PromptRecord(prompt, category, line) for line, (prompt, category) in enumerate(records, 2)]


def test_heldout_share_is_drawn_per_category():
    records = _records({"a": 40, "b": 10, "c": 2, "d": 1})
    training, heldout = split_heldout(records, 0.1, seed=7)
    assert Counter(r.category for r in heldout) == {"a": 4, "b": 1, "c": 1}
    assert sorted(training + heldout, key=lambda r: r.line) == records
    assert split_heldout(records, 0.1, seed=7) == (training, heldout)
    assert split_heldout(records, 0.0, seed=7) == (records, [])


def test_from_config_holds_out_a_share_never_seeded(tmp_path):
    path = _write(tmp_path, "p.tsv", "prompt\tcategory\n" + "".join(f"{p}\t{c}\n" for p, c in
                  [(r.prompt, r.category) for r in _records({"Animals": 30, "Food": 20})]))
    config = RunConfig(world=WorldConfig(name="prompts", prompts=path, heldout_share=0.2, image_size=64))
    world = PromptsWorld.from_config(config)
    assert world.categories == ("Animals", "Food", OTHER)
    assert Counter(world.category(p) for p in world.heldout) == {"Animals": 6, "Food": 4}
    assert [world.category(p) for p in world.heldout] == ["Animals"] * 6 + ["Food"] * 4
    seeds = world.seed_prompts(1000, random.Random(0))
    assert len(seeds) == 40 and len(set(seeds)) == 40
    assert not set(seeds) & set(world.heldout)
    assert world.grade([], []) is None


def test_seed_prompts_draw_categories_evenly():
    world = PromptsWorld(_records({"big": 200, "small": 10}), [], image_size=32)
    seeds = world.seed_prompts(20, random.Random(1))
    assert len(set(seeds)) == 20
    assert Counter(map(world.category, seeds))["small"] >= 5  # ~10 of 20, not ~1 as uniform over prompts


def test_a_second_heldout_file(tmp_path):
    prompts = _write(tmp_path, "train.txt", "a red cube\nan owl\n")
    heldout = _write(tmp_path, "eval.jsonl", '{"prompt": "a green cone", "category": "Shapes"}\n')
    config = RunConfig(world=WorldConfig(name="prompts", prompts=prompts, heldout=heldout))
    world = PromptsWorld.from_config(config)
    assert world.heldout == ["a green cone"]
    assert world.categories == (OTHER, "Shapes")
    assert world.category("A green cone!") == "Shapes"
    assert sorted(world.seed_prompts(5, random.Random(0))) == ["a red cube", "an owl"]


def test_a_heldout_prompt_also_trained_on_is_an_error(tmp_path):
    prompts = _write(tmp_path, "train.txt", "a red cube\nan owl\n")
    heldout = _write(tmp_path, "eval.txt", "a cone\nAn owl.\n")
    config = RunConfig(world=WorldConfig(name="prompts", prompts=prompts, heldout=heldout))
    with pytest.raises(ValueError, match='held-out prompt "An owl." .line 2. is also a training prompt .line 2.'):
        PromptsWorld.from_config(config)
    with pytest.raises(ValueError, match="at least one training prompt"):
        PromptsWorld([], read_prompt_file(heldout), image_size=32)


def test_accept_uses_the_files_prompts():
    training = [PromptRecord("a red cube", "Shapes", 1), PromptRecord("an owl", "Animals", 2)]
    world = PromptsWorld(training, [PromptRecord("a green cone", "Shapes", 1)], image_size=32)
    assert world.accept('"A green cone."', taken=set()) == Refused(HELD_OUT, '"A green cone."')
    assert world.accept("an  OWL", taken={world.key("an owl")}).reason == DUPLICATE
    assert world.accept("1. An owl!", taken=set()) == Accepted("an owl", "Animals")
    assert world.accept("a tiny owl", taken=set()) == Accepted("a tiny owl", None)
    assert world.category("a tiny owl") == OTHER
    assert world.key("An Owl!") == normalise("an owl")


def test_accept_refuses_prompts_over_the_token_limit():
    world = PromptsWorld([PromptRecord("a cat", OTHER, 1)], [], image_size=32, max_tokens=3,
                         count_tokens=lambda s: len(s.split()))
    assert isinstance(world.accept("a big cat", taken=set()), Accepted)
    assert world.accept("a very big cat", taken=set()).reason == "over the token limit"
    with pytest.raises(ValueError, match="go together"):
        PromptsWorld([PromptRecord("a cat", OTHER, 1)], [], image_size=32, max_tokens=3)


def test_file_prompts_past_the_token_limit_are_kept_with_a_warning(tmp_path, caplog):
    path = tmp_path / "p.txt"
    path.write_text("a cat\na very long prompt about a dog in the park\na fox\n")
    with caplog.at_level("WARNING"):
        world = PromptsWorld(read_prompt_file(path), [], image_size=32, max_tokens=4,
                             count_tokens=lambda text: len(text.split()))
    assert "1 prompts of the file are longer than the student's 4 text tokens (the first on line 2)" in caplog.text
    assert len(world.seed_prompts(10, random.Random(0))) == 3
