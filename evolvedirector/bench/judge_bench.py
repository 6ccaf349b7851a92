"""How good is a director? The figures behind `evolvedirector judge-bench`.

Discrimination, on pairs whose better image is known: every pair is shown in both orders, so
- accuracy is the share of verdicts that prefer the better image;
- position bias is the share of verdicts that went to whichever image was shown first (A):
  0.5 means none, and 1.0 a judge that always says A;
- consistency is the share of pairs judged the same way in both orders;
- parse failures are replies that could not be read (each was retried or skipped);
- latency is per verdict, throughput is verdicts per second with `concurrency` in flight.

Expansion, on source prompts: validity is the share of the requested prompts that came back
usable (non-empty, new, distinct, and in the shapes world, prompts of its grammar); diversity is
the mean pairwise cosine distance of their all-MiniLM-L6-v2 sentence embeddings (mean-pooled and
normalised, as sentence-transformers computes them), over all of them and within each source.

Synthetic pairs come from the shapes world: a correct render of a random prompt against a render
with one plausible mistake (`render` / `render_mistake`), so the label is exact.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from evolvedirector.director.base import Director
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.render import render, render_mistake


@dataclass(frozen=True)
class LabelledPair:
    prompt: str
    image_a: np.ndarray
    image_b: np.ndarray
    preferred: str  # "A" or "B"


class PairsError(ValueError):
    """A pairs file that cannot be read; the message names the line."""


# ---- pairs ---------------------------------------------------------------------------------------


def synthetic_pairs(count: int, seed: int = 0, size: int = 32) -> list[LabelledPair]:
    """`count` shapes-world pairs, the correct image first in every other one (labels balanced)."""
    rng = random.Random(seed)
    pairs = []
    for index in range(count):
        prompt = grammar.random_prompt(rng)
        good, bad = render(prompt, size, rng), render_mistake(prompt, size, rng)
        pairs.append(LabelledPair(prompt, good, bad, "A") if index % 2 == 0 else LabelledPair(prompt, bad, good, "B"))
    return pairs


def synthetic_prompts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed + 1)
    return [grammar.random_prompt(rng) for _ in range(count)]


def load_pairs(path: Path) -> list[LabelledPair]:
    """Pairs from a JSONL file: {"prompt", "image_a", "image_b", "preferred": "A" or "B"} per line,
    image paths relative to the file's folder."""
    path = Path(path)
    if not path.is_file():
        raise PairsError(f"pairs file {path} does not exist")
    pairs = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}, line {number}"
        try:
            row = json.loads(line)
        except ValueError as error:
            raise PairsError(f"{where}: not JSON ({error})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "image_a", "image_b")):
            raise PairsError(f"{where}: expected an object with strings prompt, image_a, image_b")
        if row.get("preferred") not in ("A", "B"):
            raise PairsError(f"{where}: preferred must be \"A\" or \"B\"")
        images = []
        for key in ("image_a", "image_b"):
            image_path = path.parent / row[key]
            try:
                with Image.open(image_path) as picture:
                    images.append(np.asarray(picture.convert("RGB")))
            except OSError:
                raise PairsError(f"{where}: cannot read {key} {image_path}") from None
        pairs.append(LabelledPair(row["prompt"], images[0], images[1], row["preferred"]))
    if not pairs:
        raise PairsError(f"pairs file {path} holds no pairs")
    return pairs


def save_pairs(pairs: list[LabelledPair], folder: Path) -> Path:
    """Write the pairs as PNGs and a pairs.jsonl that `load_pairs` reads; returns its path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, pair in enumerate(pairs):
        names = [f"{index:05d}-a.png", f"{index:05d}-b.png"]
        for name, image in zip(names, (pair.image_a, pair.image_b)):
            Image.fromarray(image).save(folder / name)
        lines.append(json.dumps({"prompt": pair.prompt, "image_a": names[0], "image_b": names[1],
                                 "preferred": pair.preferred}))
    target = folder / "pairs.jsonl"
    target.write_text("\n".join(lines) + "\n")
    return target


# ---- discrimination ------------------------------------------------------------------------------


def _share(part: float, whole: float) -> float:
    """part / whole, or NaN when there is nothing to divide by (no verdicts, no time)."""
    return part / whole if whole > 0 else math.nan


@dataclass
class DiscriminationResult:
    pairs: int = 0
    verdicts: int = 0
    correct: int = 0
    first_wins: int = 0  # verdicts that went to the image shown as A
    consistent: int = 0  # pairs judged alike in both orders
    parse_failures: int = 0
    skipped: int = 0
    latencies: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return _share(self.correct, self.verdicts)

    @property
    def position_bias(self) -> float:
        return _share(self.first_wins, self.verdicts)

    @property
    def consistency(self) -> float:
        return _share(self.consistent, self.pairs)

    @property
    def throughput(self) -> float:
        return _share(self.verdicts, self.seconds)


async def bench_discrimination(director: Director, pairs: list[LabelledPair], concurrency: int = 8,
                               progress: Callable[[], None] | None = None) -> DiscriminationResult:
    """Every pair judged as given and swapped, `concurrency` verdicts in flight at once."""
    result = DiscriminationResult()
    before = _stats(director)
    slots = asyncio.Semaphore(concurrency)

    async def timed(prompt: str, first: np.ndarray, second: np.ndarray) -> str | None:
        async with slots:
            start = time.perf_counter()
            verdict = await director.compare(prompt, first, second)
            result.latencies.append(time.perf_counter() - start)
        return verdict.winner

    async def judge(pair: LabelledPair) -> None:
        as_given, swapped = await asyncio.gather(
            timed(pair.prompt, pair.image_a, pair.image_b), timed(pair.prompt, pair.image_b, pair.image_a)
        )
        if as_given is not None and swapped is not None:  # else no usable verdict (counted in `skipped`)
            swapped_back = "B" if swapped == "A" else "A"  # in the pair's own frame
            result.pairs += 1
            result.verdicts += 2
            result.correct += (as_given == pair.preferred) + (swapped_back == pair.preferred)
            result.first_wins += (as_given == "A") + (swapped == "A")
            result.consistent += as_given == swapped_back
        if progress is not None:
            progress()

    start = time.perf_counter()
    await asyncio.gather(*(judge(pair) for pair in pairs))
    result.seconds = time.perf_counter() - start
    after = _stats(director)
    result.parse_failures = after["parse_failures"] - before["parse_failures"]
    result.skipped = after["skipped"] - before["skipped"]
    return result


# ---- expansion -----------------------------------------------------------------------------------


@dataclass
class ExpansionResult:
    sources: int = 0
    requested: int = 0
    returned: int = 0
    valid: int = 0
    mutations_valid: int = 0
    diversity: float = math.nan  # over all valid expansions
    diversity_within: float = math.nan  # mean over sources with two or more
    parse_failures: int = 0

    @property
    def validity(self) -> float:
        return _share(self.valid, self.requested)

    @property
    def mutation_validity(self) -> float:
        return _share(self.mutations_valid, self.sources)


def shapes_world_prompt(prompt: str) -> bool:
    try:
        grammar.parse(prompt)
    except ValueError:
        return False
    return True


async def bench_expansion(director: Director, prompts: list[str], n: int = 3,
                          is_valid: Callable[[str], bool] | None = None, concurrency: int = 8,
                          embed: Callable[[list[str]], np.ndarray] | None = None) -> ExpansionResult:
    """Ask for n prompts like each source and one unlike it; score what comes back."""
    before = _stats(director)
    slots = asyncio.Semaphore(concurrency)

    async def ask(prompt: str) -> tuple[list[str], str]:
        async with slots:
            expanded = await director.expand(prompt, n)
        async with slots:
            mutated = await director.mutate(prompt)
        return expanded, mutated

    answers = await asyncio.gather(*(ask(p) for p in prompts))
    result = ExpansionResult(sources=len(prompts), requested=n * len(prompts))
    kept: list[list[str]] = []
    for source, (expanded, mutated) in zip(prompts, answers):
        good = []
        for proposal in expanded[:n]:
            usable = isinstance(proposal, str) and proposal.strip() and proposal != source and proposal not in good
            if usable and (is_valid is None or is_valid(proposal)):
                good.append(proposal)
        result.returned += len(expanded)
        result.valid += len(good)
        kept.append(good)
        usable = isinstance(mutated, str) and mutated.strip() and mutated != source
        if usable and (is_valid is None or is_valid(mutated)):
            result.mutations_valid += 1
    everything = [p for group in kept for p in group]
    if len(everything) >= 2:
        embed = embed or sentence_embeddings
        vectors = dict(zip(everything, embed(everything)))
        result.diversity = mean_cosine_distance(np.stack([vectors[p] for p in everything]))
        within = [mean_cosine_distance(np.stack([vectors[p] for p in g])) for g in kept if len(g) >= 2]
        result.diversity_within = float(np.mean(within)) if within else math.nan
    result.parse_failures = _stats(director)["parse_failures"] - before["parse_failures"]
    return result


def mean_cosine_distance(vectors: np.ndarray) -> float:
    """Mean of 1 - cos over all pairs of rows (rows need not be normalised)."""
    if len(vectors) < 2:
        return math.nan
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    upper = np.triu_indices(len(unit), k=1)
    return float(np.mean(1.0 - (unit @ unit.T)[upper]))


def sentence_embeddings(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 sentence embeddings (the weights the student's text encoder loads)."""
    import torch

    from evolvedirector.student.text_encoder import TextEncoder

    encoder = TextEncoder(max_tokens=128)
    states, mask = encoder.encode(list(dict.fromkeys(texts)))
    weights = mask.unsqueeze(-1).to(states.dtype)
    pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    pooled = torch.nn.functional.normalize(pooled, dim=-1).numpy()
    index = {text: i for i, text in enumerate(dict.fromkeys(texts))}
    return np.stack([pooled[index[t]] for t in texts])


def _stats(director: Director) -> dict[str, int]:
    stats = getattr(director, "stats", None) or {}
    return {key: int(stats.get(key, 0)) for key in ("parse_failures", "skipped")}


# ---- the report ----------------------------------------------------------------------------------


def report_lines(discrimination: DiscriminationResult | None, expansion: ExpansionResult | None,
                 concurrency: int) -> list[str]:
    """The bench's printed figures; the last line is machine-readable."""
    lines = []
    failures = 0
    if discrimination is not None:
        d = discrimination
        latencies = np.array(d.latencies) * 1000 if d.latencies else np.array([math.nan])
        lines += [
            f"discrimination: accuracy {d.accuracy:.3f} ({d.correct} of {d.verdicts} verdicts on {d.pairs} pairs, "
            "each in both orders)",
            f"position bias: {d.position_bias:.3f} of verdicts went to the image shown first (0.5: none); "
            f"consistent across the swap on {d.consistency:.3f} of pairs",
            f"parse failures: {d.parse_failures} unusable replies, {d.skipped} verdicts with no usable answer "
            "(their pairs left out)",
            f"latency: mean {np.mean(latencies):.1f} ms, p50 {np.percentile(latencies, 50):.1f} ms, "
            f"p95 {np.percentile(latencies, 95):.1f} ms; throughput {d.throughput:.1f} verdicts/s "
            f"at concurrency {concurrency}",
        ]
        failures += d.parse_failures
    if expansion is not None:
        e = expansion
        lines += [
            f"expansion: validity {e.validity:.3f} ({e.valid} usable of {e.requested} asked, {e.returned} returned, "
            f"from {e.sources} prompts); mutation validity {e.mutation_validity:.3f}",
            f"expansion diversity: {e.diversity:.3f} mean pairwise cosine distance (within a source "
            f"{e.diversity_within:.3f}); parse failures {e.parse_failures}",
        ]
        failures += e.parse_failures
    accuracy = discrimination.accuracy if discrimination is not None else math.nan
    bias = discrimination.position_bias if discrimination is not None else math.nan
    lines.append(f"accuracy={accuracy:.4f} position_bias={bias:.4f} parse_failures={failures}")
    return lines
