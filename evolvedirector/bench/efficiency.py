"""`evolvedirector bench efficiency`: does the director make teacher calls go further?

The paper's two claims, measured in the shapes world at matched optimizer steps and seeds:
1. Data efficiency. Naive distillation (B prompts drawn at random from the grammar, one teacher
   image each: from each teacher alone, and from a random teacher per prompt) against the full
   loop with the same budget of B teacher calls, over a ladder of budgets.
2. A student of several teachers beats each of them: the loop's student against every teacher's
   own held-out accuracy, with the share of training samples the director took from each.
Ablations at one budget switch one operation off at a time, and vary the judge's accuracy.
The ceiling arm trains the same student on perfect images (the world's own renderer, no teacher)
for the same steps: no curation gives better images, so when it stays below the best teacher, the
student, not the director, is what keeps S under T at these settings.

Every arm trains a fresh student for exactly `steps` optimizer steps and is graded on the same
held-out prompts, which no arm ever trains on. The student and recipe are the demo's, as
configs/demo.yaml's `student` and `train` sections define them (its 16-px steps count from each
arm's first step); a profile changes only what its hardware needs: the batch, the learning rate
with it, the device. Profiles: the default and `--quick` are sized for a CPU (arms in parallel
processes, one core each); `--profile gpu` runs the default's arms on one H100/H200, at a far
larger batch and more steps, several arms sharing the GPU. The last line printed is
`efficiency ratio=<R> student=<S> best_teacher=<T>`, where R is the calls naive distillation
needs to reach the loop's accuracy at the smallest budget divided by the loop's calls there
(log-linear interpolation on the ladder; the best naive arm at each budget), S is the loop's
mean held-out accuracy at the largest budget, and T the best single teacher's own mean accuracy.

Error bars: each arm's held-out accuracy comes with a 95% percentile bootstrap interval over its
held-out prompts (stats.accuracy_intervals). The headline block before the last line gives R as
the mean of per-seed ratios with a 95% t-interval over seeds, where seed s's ratio is its own loop
arm at the smallest budget against the seed-averaged best naive curve (so the interval holds the
loop's seed-to-seed spread, not the naive curve's); and S - T for the one seed the loop runs at
the largest budget, with a 95% paired bootstrap over held-out prompts (the student's outcome and
the teacher's share correct on the same prompts), which leaves out seed-to-seed spread. The last
line's R stays the ratio of the seed-averaged loop, so it can differ a little from the block's
mean of per-seed ratios.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

import typer
from rich.console import Console
from rich.table import Table

from evolvedirector.bench import bench_app
from evolvedirector.config import RunConfig, demo_config_path, load_config
from evolvedirector.evaluation.stats import accuracy_intervals, format_rate, mean_interval, paired_difference_interval
from evolvedirector.seeds import seed_for
from evolvedirector.store import write_atomic
from evolvedirector.worlds.shapes import grammar
from evolvedirector.worlds.shapes.heldout import accuracy, heldout_prompts
from evolvedirector.worlds.shapes.profiles import TEACHER_PROFILES, own_outcomes, teacher_image
from evolvedirector.worlds.shapes.render import render
from evolvedirector.worlds.shapes.rules import is_correct

TEACHERS = ("atlas", "quill", "tally")
MEAN = "mean"
RESULTS_FILE, SETTINGS_FILE = "results.json", "settings.json"


@dataclass(frozen=True)
class Settings:
    ladder: tuple[int, ...]
    steps: int
    seeds: tuple[int, ...]  # for the headline comparison (the loop and every naive teacher) at the smallest budget
    heldout_per_domain: int
    ablation_budget: int | None  # None: no ablations
    judge_accuracies: tuple[float, ...]
    naive_teachers: tuple[str, ...] = ("quill", "random")  # on the whole ladder
    single_teachers_at_ablation: bool = True  # every other teacher alone, at the ablation budget
    ceiling: bool = True  # the student on perfect images at the ablation budget: what any curation could reach
    # What a profile's hardware changes in the demo's recipe (None: demo.yaml's). lr None with a
    # batch of its own: the demo's lr scaled by the square root of the batch ratio (Adam's rule).
    batch_size: int | None = None
    lr: float | None = None
    device: str | None = None


# Every figure in these comments was measured with the earlier recipe (shapes-xs, lr 1e-3,
# uniform timesteps, every step at 32 px, 16 held-out prompts per domain, 2 seeds) and has not
# been re-measured with the demo's (shapes-xxs at 3e-3, noisier timesteps, 500 steps at 16 px),
# which learns faster and steps faster; the arm counts are today's.
# Learning curve of shapes-xs on 1000 prompts of perfect images (earlier recipe): 500 steps 0.02,
# 1000 steps 0.11, 2000 steps 0.42, 3000 steps 0.53, 4000 0.48. Below ~1500 steps data quality
# hardly shows, so the default buys steps by running fewer arms: the best single teacher (quill)
# and a random teacher on the whole ladder, the other two teachers alone only at the ablation
# budget, and the extra seeds (error bars over seeds need at least 3) only for the headline arms
# at the smallest budget: the loop, quill and the random teacher. 32 held-out prompts per domain
# narrow a domain's 95% interval at a rate of 0.5 to about +-0.17 (1.96 x sqrt(0.25 / 32)), from
# +-0.25 at 16. The director's accuracy 0.9 is the loop's own default, so its ablation rows are
# 1.0, 0.75 and 0.6.
# Measured on 2 CPU cores with the earlier recipe (two arms at a time, one core each): at 1500
# steps a naive arm took ~290 s and a loop arm ~340 s (rendering for the director, grading), 23
# arms 61 minutes; at 1300 steps the then default's 22 arms took 50 minutes (2999 s). Today's
# default has 26 arms (4 more headline arms for seeds 1 and 2), not timed.
DEFAULT = Settings(ladder=(250, 1000, 4000), steps=1300, seeds=(0, 1, 2), heldout_per_domain=32,
                   ablation_budget=1000, judge_accuracies=(1.0, 0.75, 0.6))
# Four arms, two at a time: measured 397 s (6.6 minutes) on 2 cores with the earlier recipe.
QUICK = Settings(ladder=(250, 1000), steps=1000, seeds=(0,), heldout_per_domain=12, ablation_budget=None,
                 judge_accuracies=(), naive_teachers=("quill",), single_teachers_at_ablation=False,
                 ceiling=False)
# One H100 or H200 (`--profile gpu`): the default's 26 arms, each trained 8x the batch for 2000
# steps, so the student sees 512k images, 5.3x the 96k of the CPU curve's 3000 steps at batch 32
# (0.53 on perfect images with the earlier recipe), and relations and counts have the steps to
# show. The learning rate grows as the square root of the batch (Adam's rule: the demo's 3e-3 x
# sqrt(256/32) = 8.5e-3, computed by base_config; not tried at this batch, and above the 5e-3 the
# demo found worse at batch 32); the demo's warm-up, EMA, timesteps and 16-px first steps stay.
# Eight arms at a time share the GPU, each a process with 2 threads of the 16 cores.
#
# Estimated runtime (not yet measured on a GPU; `estimate_seconds` is the model, `gpu_estimate`
# its figures). The earlier recipe's shapes-xs step measured 26 ms at batch 32 on CUDA, bound by
# Python, not the GPU; at batch 256 the host also draws 8x the noise and batches 8x the samples:
# ~35 ms for an xs arm alone. The demo's shapes-xxs has half the blocks: on a CPU at batch 1, where
# a step is almost all Python, an xxs step took 0.51 of an xs step (2.14 s against 4.13 s and 2.39
# against 4.80 for 60 steps, one thread, `bench train --batch-size 1`), so ~18 ms an xxs arm alone.
# The GPU's own work at 256 is half of xs's ~0.1 TFLOP a step in fp32, ~2.5 ms (trainer/flops.py),
# so eight arms keep the GPU busy for ~20 ms a step: 2000 steps ~40 s (the first 500 at 16 px are
# cheaper; not counted). Add ~20 s an arm for its process, CUDA context and data (up to 4000
# prompts through MiniLM on the CPU), ~45 s for the loop's (with its rounds: renders, judging,
# buying): 26 arms, 8 at a time, the ablations once the full loop is done, and the tables ~20 s
# give 4.8 minutes (7.4 with the xs figures). Each ms more a step adds ~8 s, each s more an arm
# ~4 s. (The same model with the CPU's figures measured with the earlier recipe, 290 s a naive arm
# at 1500 steps and 50 s more for the loop, two at a time, gave 52 minutes for the then default
# of 22 arms: it took 50.)
GPU = Settings(ladder=(250, 1000, 4000), steps=2000, seeds=(0, 1, 2), heldout_per_domain=32,
               ablation_budget=1000, judge_accuracies=(1.0, 0.75, 0.6), batch_size=256, device="cuda")
GPU_JOBS = 8
GPU_HOST_STEP_S = 0.018  # an xxs arm's step at batch 256 alone: Python-bound (see above)
GPU_DEVICE_STEP_S = 0.0025  # the GPU's own work in that step (estimated from its FLOPs)
GPU_NAIVE_OVERHEAD_S, GPU_LOOP_OVERHEAD_S, GPU_SUMMARY_S = 20.0, 45.0, 20.0
PROFILES = {"default": DEFAULT, "quick": QUICK, "gpu": GPU}
CEILING = "perfect-images"  # the world's renderer in place of a teacher: every image correct, no dollars


@dataclass
class Result:
    arm: str
    budget: int
    seed: int
    calls: int
    dollars: float
    accuracy: dict[str, float]
    seconds: float
    selection: dict[str, dict[str, float]] = field(default_factory=dict)  # domain -> teacher -> share
    # Share of the images the student trained on that the world's rules call correct, per domain:
    # what curation bought, before the student's own noise hides it.
    label_accuracy: dict[str, float] = field(default_factory=dict)
    student_win_rate: float | None = None
    # Each held-out prompt's outcome, per domain in held-out order, and `accuracy` with its 95%
    # bootstrap interval over them (domain and "mean" -> rate, low, high). Empty in a results.json
    # from before they were kept: its tables show the rate alone.
    outcomes: dict[str, list[bool]] = field(default_factory=dict)
    intervals: dict[str, dict[str, float]] = field(default_factory=dict)


def base_config(out: Path, seed: int, settings: Settings) -> RunConfig:
    """The demo's config, student and recipe as it defines them but for what the profile's hardware
    changes (batch, lr, device), without per-round evaluation (the bench grades at the end)."""
    config = load_config(demo_config_path(), overrides={"out": str(out), "seed": seed})
    config.world.heldout_per_domain = settings.heldout_per_domain
    config.evolve.evaluate_every_round = False
    config.log_with = []  # arms are compared by their results, not followed
    batch, lr = settings.batch_size or config.train.batch_size, settings.lr
    if lr is None:
        lr = config.train.lr * math.sqrt(batch / config.train.batch_size)
    config.train = config.train.model_copy(update={"batch_size": batch, "lr": lr})
    if settings.device is not None:
        config.device = settings.device
    return config


def build_student_and_trainer(config: RunConfig):
    import torch

    from evolvedirector.student import Student
    from evolvedirector.trainer import Trainer

    torch.manual_seed(config.seed)
    student = Student(config.student, config.world.image_size)
    return student, Trainer(student, config.train, seed=config.seed, device=config.device)


def grade(student, config: RunConfig, prompts: list[str]) -> dict:
    """Result's accuracy, outcomes and intervals for the student's image of each held-out prompt."""
    return graded(prompts, student.generate(prompts, seed=config.seed))


def graded(prompts: list[str], images) -> dict:
    outcomes: dict[str, list[bool]] = {domain: [] for domain in grammar.DOMAINS}
    for prompt, image in zip(prompts, images):
        outcomes[grammar.parse(prompt).domain].append(bool(is_correct(prompt, image)))
    return from_outcomes({domain: values for domain, values in outcomes.items() if values})


def from_outcomes(outcomes: dict[str, list[bool]]) -> dict:
    """Result's accuracy, outcomes and intervals from each domain's held-out outcomes."""
    intervals = accuracy_intervals(outcomes)
    return dict(accuracy={key: cell["rate"] for key, cell in intervals.items()}, outcomes=outcomes,
                intervals=intervals)


def naive_name(teacher: str) -> str:
    return CEILING if teacher == CEILING else f"naive-{teacher}"


def naive_arm(budget: int, teacher: str, seed: int, settings: Settings, workdir: Path) -> Result:
    """B random prompts (domain uniform, then prompt uniform), one image each, trained `steps` steps.

    `teacher` is a teacher's name, "random" (a random teacher per prompt), or CEILING (perfect images)."""
    from evolvedirector.student import from_pixels

    started = time.time()
    label = naive_name(teacher)
    config = base_config(workdir / f"{label}-{budget}-{seed}", seed, settings)
    heldout = heldout_prompts(settings.heldout_per_domain, config.world.heldout_seed)
    rng = random.Random(seed_for(seed, "naive prompts", budget))
    prompts, images, dollars = [], [], 0.0
    for index in range(budget):
        prompt = grammar.random_prompt(rng, exclude=heldout)
        prompts.append(prompt)
        if teacher == CEILING:
            images.append(render(prompt, config.world.image_size, random.Random(index)))
            continue
        name = rng.choice(TEACHERS) if teacher == "random" else teacher
        profile = TEACHER_PROFILES[name]
        # A prompt drawn twice gets a second, independent image (another seed), as a second call would.
        images.append(teacher_image(profile, prompt, index, config.world.image_size))
        dollars += profile.cost_per_image
    student, trainer = build_student_and_trainer(config)
    trainer.train(from_pixels(images), prompts, settings.steps)
    return Result(label, budget, seed, budget, dollars, seconds=time.time() - started,
                  label_accuracy=accuracy(prompts, images), **grade(student, config, heldout))


def loop_arm(budget: int, seed: int, settings: Settings, workdir: Path, label: str = "loop",
             evolve: dict | None = None, director: dict | None = None, teachers: tuple[str, ...] = TEACHERS,
             rounds: int = 5) -> Result:
    """The full loop with `budget` teacher calls: half buys the seed set from every teacher, the rest
    goes where the director sends it. Training steps are split over `rounds`; whatever the loop has
    not used when the budget runs out is trained on the final set."""
    from rich.console import Console as QuietConsole

    from evolvedirector.config import TeacherConfig
    from evolvedirector.loop import Evolution

    started = time.time()
    config = base_config(workdir / f"{label}-{budget}-{seed}", seed, settings)
    config.teachers = [TeacherConfig(name=name) for name in teachers]
    config.evolve.seed_prompts = max(4, budget // (2 * len(teachers)))
    config.train.steps_per_round = max(1, settings.steps // rounds)
    config.budget.max_teacher_calls = budget
    config.budget.max_rounds = rounds
    config.budget.max_dollars = None
    config.budget.max_minutes = None
    for key, value in (evolve or {}).items():
        setattr(config.evolve, key, value)
    for key, value in (director or {}).items():
        setattr(config.director, key, value)

    evolution = Evolution(config, console=QuietConsole(quiet=True))
    evolution.run()
    remaining = settings.steps - evolution.trainer.step
    if remaining > 0:
        evolution.train_on_set(evolution.store.active_samples(), remaining, label="final set")
    calls, dollars = evolution.store.spend()
    trained_on = evolution.store.all_samples()  # deleted samples were trained on before their deletion
    labels = accuracy([s.prompt for s in trained_on], [evolution.images.get(s.image_hash) for s in trained_on])
    verdicts = evolution.store.verdict_counts()
    judged = sum(verdicts.values())
    return Result(
        label, budget, seed, calls, dollars, seconds=time.time() - started, selection=selection_shares(evolution.store),
        student_win_rate=verdicts.get("student", 0) / judged if judged else None, label_accuracy=labels,
        **grade(evolution.student, config, evolution.world.heldout),
    )


def selection_shares(store) -> dict[str, dict[str, float]]:
    counts: dict[str, dict[str, int]] = {}
    for row in store.selection_counts():
        counts.setdefault(row["domain"], {})[row["teacher"]] = row["n"]
    return {d: {t: n / sum(c.values()) for t, n in c.items()} for d, c in counts.items()}


def teacher_outcomes(prompts: list[str], draws: int = 20, size: int = 32) -> dict[str, dict[str, list[float]]]:
    """Each teacher's own held-out outcomes: teacher -> domain -> each prompt's share of `draws`
    images the rules call correct, prompts in the order an arm's outcomes keep them."""
    return {name: own_outcomes(TEACHER_PROFILES[name], prompts, draws, size) for name in TEACHERS}


def teacher_intervals(outcomes: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, dict[str, float]]]:
    """teacher -> domain and "mean" -> rate, low, high: a bootstrap over prompts, each prompt's
    value its share correct (equal draws per prompt, so a rate is the share of all draws)."""
    return {name: accuracy_intervals(shares) for name, shares in outcomes.items()}


def calls_needed(target: float, ladder: list[int], curve: list[float]) -> tuple[float, str]:
    """Calls naive distillation needs to reach `target`, interpolated log-linearly on its ladder.

    The curve is made monotone first (more calls never hurt the best arm). Returns (calls, bound):
    bound is "" when interpolated, ">=" past the ladder's top, "<=" below its bottom."""
    envelope = [max(curve[: i + 1]) for i in range(len(curve))]
    if target <= envelope[0]:
        return float(ladder[0]), "<="
    for i in range(1, len(ladder)):
        if target <= envelope[i]:
            low, high = envelope[i - 1], envelope[i]
            fraction = (target - low) / (high - low) if high > low else 1.0
            log_calls = math.log(ladder[i - 1]) + fraction * (math.log(ladder[i]) - math.log(ladder[i - 1]))
            return math.exp(log_calls), ""
    return float(ladder[-1]), ">="


def seed_mean(results: list[Result], arm: str, budget: int) -> float | None:
    """An arm's mean held-out accuracy at a budget, averaged over the seeds it ran (None: not run)."""
    values = [r.accuracy[MEAN] for r in results if r.arm == arm and r.budget == budget]
    return statistics.mean(values) if values else None


def best_naive_curve(results: list[Result], ladder: list[int]) -> list[float]:
    """The best naive arm's accuracy (averaged over its seeds) at each budget: the curve the loop is
    measured against. The ceiling arm is not naive distillation (no teacher sells its images)."""
    naive = {r.arm for r in results if r.arm.startswith("naive-")}
    return [max(a for arm in naive if (a := seed_mean(results, arm, budget)) is not None) for budget in ladder]


@dataclass
class Headline:
    """R and S - T with their 95% intervals ({"rate", "low", "high"}; low and high None where there
    is none), and what they were computed from."""

    ratio: dict[str, float | None]
    ratios: list[tuple[int, float, str]]  # (seed, R of that seed, its calls_needed bound)
    gap: dict[str, float | None]  # S - T
    student: float  # S
    teacher: float  # T
    best_teacher: str


def headline(results: list[Result], ladder: list[int], first_seed: int,
             teachers_own: dict[str, dict[str, list[float]]]) -> Headline:
    """R over seeds and S - T over held-out prompts.

    R: for each seed the loop ran at the smallest budget, the calls naive distillation needs to
    reach that seed's loop accuracy (calls_needed on the seed-averaged best naive curve) divided
    by that seed's loop calls; reported as the mean of those ratios with a 95% Student t-interval
    over seeds (stats.mean_interval: with 3 seeds a bootstrap has too few distinct resamples). The
    naive curve is the same for every seed, so the interval is the loop's seed-to-seed spread, not
    the naive arms'. A seed past the ladder's top gives a lower bound, counted as its value.
    S - T: the loop's `first_seed` at the largest budget (the one seed run there) against the
    teacher with the best own mean, with a 95% paired bootstrap over held-out prompts (the same
    prompts drawn for both); it leaves out seed-to-seed spread. A result saved before outcomes
    were kept has S - T without an interval."""
    curve = best_naive_curve(results, ladder)
    ratios = []
    for r in sorted((r for r in results if r.arm == "loop" and r.budget == ladder[0]), key=lambda r: r.seed):
        calls, bound = calls_needed(r.accuracy[MEAN], ladder, curve)
        ratios.append((r.seed, calls / r.calls, bound))
    top = next(r for r in results if r.arm == "loop" and r.budget == ladder[-1] and r.seed == first_seed)
    teachers = teacher_intervals(teachers_own)
    best = max(teachers, key=lambda name: teachers[name][MEAN]["rate"])
    teacher = teachers[best][MEAN]["rate"]
    if top.outcomes:
        gap = paired_difference_interval(top.outcomes, teachers_own[best])
    else:
        gap = {"rate": top.accuracy[MEAN] - teacher, "low": None, "high": None}
    return Headline(mean_interval([ratio for _, ratio, _ in ratios]), ratios, gap, top.accuracy[MEAN], teacher, best)


@dataclass(frozen=True)
class Arm:
    """One student trained from scratch: naive distillation from `teacher`, or the loop `label`."""

    budget: int
    seed: int
    teacher: str | None = None  # naive arms only
    label: str = "loop"
    options: tuple[tuple[str, object], ...] = ()  # loop_arm keyword arguments (ablations)

    @property
    def name(self) -> str:
        """The name its Result carries, and the start of its folder under runs/."""
        return self.label if self.teacher is None else naive_name(self.teacher)

    def run(self, settings: Settings, workdir: Path) -> Result:
        if self.teacher is not None:
            return naive_arm(self.budget, self.teacher, self.seed, settings, workdir)
        return loop_arm(self.budget, self.seed, settings, workdir, label=self.label, **dict(self.options))


def _worker_init(threads: int) -> None:
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(threads)


def run_arms(arms: list[Arm], settings: Settings, workdir: Path, jobs: int,
             follow_up: Callable[[Result], list[Arm]] = lambda result: []):
    """Yield each arm's result as it finishes, `jobs` arms at a time; `follow_up(result)` names arms
    that may start once that result is known (they queue behind the others, so no core idles while
    the last of a first batch finishes).

    Separate processes with one CPU thread each, rather than one process with all of them: these
    students are too small for threads to pay (and threads that spin while another process holds
    the core cost ~7x), while independent arms scale with cores."""
    if jobs <= 1:
        queue = list(arms)
        while queue:
            result = queue.pop(0).run(settings, workdir)
            queue += follow_up(result)
            yield result
        return
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (multiprocessing.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_worker_init, initargs=(threads,)) as pool:
        pending = {pool.submit(arm.run, settings, workdir) for arm in arms}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                pending |= {pool.submit(arm.run, settings, workdir) for arm in follow_up(result)}
                yield result


def error_bars(rows: list[Result]) -> list[list[float]]:
    """[below, above] each row's held-out mean: its 95% interval over held-out prompts as matplotlib's
    yerr wants it (0 and 0 for a result saved before outcomes were kept: no interval to draw)."""
    spans = [r.intervals.get(MEAN, {}) for r in rows]
    return [[r.accuracy[MEAN] - span["low"] if span.get("low") is not None else 0.0 for r, span in zip(rows, spans)],
            [span["high"] - r.accuracy[MEAN] if span.get("high") is not None else 0.0 for r, span in zip(rows, spans)]]


def plot(results: list[Result], seed: int, path: Path, best_teacher: float | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    arms = sorted({r.arm for r in results if r.arm.startswith(("naive", "loop"))})
    for arm in arms:
        rows = sorted((r for r in results if r.arm == arm and r.seed == seed), key=lambda r: r.budget)
        if len(rows) < 2:
            continue
        style = dict(marker="o", linewidth=2.5 if arm == "loop" else 1.2, label=arm, capsize=3)
        means, bars = [r.accuracy[MEAN] for r in rows], error_bars(rows)
        axes[0].errorbar([r.calls for r in rows], means, yerr=bars, **style)
        axes[1].errorbar([r.dollars for r in rows], means, yerr=bars, **style)
    ceiling = next((r for r in results if r.arm == CEILING and r.seed == seed), None)
    for ax, label in zip(axes, ("teacher calls", "dollars")):
        if ceiling is not None:
            ax.axhline(ceiling.accuracy[MEAN], color="grey", linestyle="--", label="student on perfect images")
        if best_teacher is not None:
            ax.axhline(best_teacher, color="black", linestyle=":", label="best teacher's own accuracy")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^2, 3x10^2 ... overlap
        ax.set_xlabel(label)
        ax.set_ylabel("held-out accuracy (mean of domains)")
        ax.set_title("bars: 95% bootstrap interval over held-out prompts", fontsize=9)
        ax.legend(loc="best")
    budgets = sorted({r.budget for r in results if r.arm.startswith("naive-")})
    axes[0].set_xticks(budgets, [str(b) for b in budgets])  # the ladder itself
    fig.savefig(path, dpi=90)
    plt.close(fig)


MEAN_COLUMN = "mean [95%]"  # the interval over held-out prompts


def interval_text(cell: dict[str, float | None]) -> str:
    """0.42 [0.30, 0.55], or the rate alone where there is no interval."""
    return format_rate(cell) if cell.get("low") is not None else f"{cell['rate']:.2f}"


def accuracy_row(acc: dict[str, float], intervals: dict[str, dict[str, float]] | None = None) -> list[str]:
    """Each domain's rate, then the mean with its interval where one is known."""
    mean = interval_text(intervals[MEAN]) if intervals else f"{acc.get(MEAN, 0):.2f}"
    return [*(f"{acc.get(d, 0):.2f}" for d in grammar.DOMAINS), mean]


def result_row(r: Result) -> list[str]:
    return accuracy_row(r.accuracy, r.intervals)


def main_arms(settings: Settings) -> list[Arm]:
    """Every arm but the ablations, the loop's first: they take longest, so the pool ends with the
    short ones."""
    first_seed, others = settings.seeds[0], settings.seeds[1:]
    arms = [Arm(budget, first_seed) for budget in settings.ladder]
    arms += [Arm(settings.ladder[0], seed) for seed in others]  # the headline's other seeds
    arms += [Arm(budget, first_seed, teacher) for budget in settings.ladder for teacher in settings.naive_teachers]
    arms += [Arm(settings.ladder[0], seed, teacher) for seed in others for teacher in settings.naive_teachers]
    if settings.ablation_budget is not None and settings.single_teachers_at_ablation:
        arms += [Arm(settings.ablation_budget, first_seed, t) for t in TEACHERS if t not in settings.naive_teachers]
    if settings.ablation_budget is not None and settings.ceiling:
        arms.append(Arm(settings.ablation_budget, first_seed, CEILING))
    return arms


def ablation_arms(settings: Settings, student_win_rate: float) -> list[Arm]:
    """One operation off at a time at the ablation budget. Without discrimination, samples are kept
    or deleted by a coin with the full loop's own student-win rate, so only the judging changes."""
    if settings.ablation_budget is None:
        return []
    ablations = [
        ("no-discrimination", dict(evolve={"discrimination": "random", "random_student_win_rate": student_win_rate})),
        ("no-expansion", dict(evolve={"expansion": False})),
        ("no-deletion", dict(evolve={"deletion": False})),
        ("no-mutation", dict(evolve={"mutation_ratio": 0.0})),
        ("one-teacher-quill", dict(teachers=("quill",))),
        *((f"judge-{a:g}", dict(director={"judge_accuracy": a})) for a in settings.judge_accuracies),
    ]
    return [Arm(settings.ablation_budget, settings.seeds[0], label=label, options=tuple(options.items()))
            for label, options in ablations]


def estimate_seconds(settings: Settings, jobs: int, step_s: float, naive_overhead_s: float,
                     loop_overhead_s: float, summary_s: float = 0.0) -> float:
    """Wall time of a run under a simple model: an arm takes `steps` x `step_s` plus a fixed
    overhead (a loop arm's rounds cost more than a naive arm's data), `jobs` at a time in the order
    `run_arms` starts them, the ablations queued once the full loop at the ablation budget ends."""
    import heapq

    def duration(arm: Arm) -> float:
        return settings.steps * step_s + (naive_overhead_s if arm.teacher is not None else loop_overhead_s)

    queue = main_arms(settings)
    running: list[tuple[float, int, Arm]] = []  # (end, tie-break, arm)
    now, count = 0.0, 0
    while queue or running:
        while queue and len(running) < max(1, jobs):
            arm = queue.pop(0)
            heapq.heappush(running, (now + duration(arm), count, arm))
            count += 1
        now, _, arm = heapq.heappop(running)
        if arm.teacher is None and arm.label == "loop" and arm.budget == settings.ablation_budget \
                and arm.seed == settings.seeds[0]:
            queue += ablation_arms(settings, 0.2)
    return now + summary_s


def gpu_estimate(settings: Settings, jobs: int) -> float:
    """The GPU profile's estimated seconds with `jobs` arms sharing one GPU (see GPU)."""
    step = max(GPU_HOST_STEP_S, jobs * GPU_DEVICE_STEP_S)
    return estimate_seconds(settings, jobs, step, GPU_NAIVE_OVERHEAD_S, GPU_LOOP_OVERHEAD_S, GPU_SUMMARY_S)


def settings_from_options(quick: bool, steps: int | None, ladder: str | None, profile: str | None = None) -> Settings:
    if profile is not None and profile not in PROFILES:
        raise typer.BadParameter(f"--profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    if quick and profile not in (None, "quick"):
        raise typer.BadParameter(f"--quick is --profile quick: it cannot go with --profile {profile}")
    settings = PROFILES[profile or ("quick" if quick else "default")]
    if steps is not None:
        settings = Settings(**{**asdict(settings), "steps": steps})
    if ladder is not None:
        try:
            budgets = tuple(sorted(int(b) for b in ladder.split(",")))
        except ValueError:
            raise typer.BadParameter(f"--ladder must be integers separated by commas, got {ladder!r}") from None
        if len(budgets) < 2 or budgets[0] < 12:
            raise typer.BadParameter("--ladder needs at least two budgets of 12 calls or more")
        ablation = settings.ablation_budget
        if ablation is not None and ablation not in budgets:
            ablation = budgets[len(budgets) // 2]
        settings = Settings(**{**asdict(settings), "ladder": budgets, "ablation_budget": ablation})
    return settings


def recipe_of(config: RunConfig) -> dict[str, object]:
    """What every arm trains with, as resolved: the student and train sections, field by field
    ("train.lr": 0.003). Saved beside the settings, so that a resumed run whose demo.yaml has
    changed since is refused instead of mixing two recipes in one table."""
    sections = {"student": config.student.model_dump(mode="json"), "train": config.train.model_dump(mode="json")}
    return {f"{section}.{name}": value for section, fields_ in sections.items() for name, value in fields_.items()}


def saved_settings_text(settings: Settings, recipe: dict[str, object]) -> bytes:
    return json.dumps({**asdict(settings), "recipe": recipe}, indent=1).encode()


def load_finished(out: Path, settings: Settings, recipe: dict[str, object], console: Console) -> list[Result]:
    """The results an interrupted run already holds, after checking it ran with these settings and
    this recipe."""
    saved_settings, saved_results = out / SETTINGS_FILE, out / RESULTS_FILE
    if not saved_settings.is_file():
        raise typer.BadParameter(f"--resume: {saved_settings} does not exist (no bench efficiency run in {out})")
    saved = json.loads(saved_settings.read_text())
    saved_recipe = saved.pop("recipe", None)
    if saved_recipe is None:
        console.print(f"note: {saved_settings} is from before the recipe was recorded; the arms left train "
                      "today's recipe (printed below)", highlight=False)
    else:
        changed = sorted(k for k in recipe.keys() | saved_recipe.keys() if saved_recipe.get(k) != recipe.get(k))
        if changed:
            differences = ", ".join(f"{k}: {saved_recipe.get(k)} there, {recipe.get(k)} now" for k in changed)
            raise typer.BadParameter(f"--resume: {out} trained another recipe ({differences}); the demo's config "
                                     "changed since: finish it with that config, or start again in another --out")
    # A run from before a field existed ran with its default.
    saved = {**{f.name: f.default for f in fields(Settings) if f.default is None}, **saved}
    current = json.loads(json.dumps(asdict(settings)))  # tuples as lists, as they were saved
    changed = sorted(k for k in current.keys() | saved.keys() if saved.get(k) != current.get(k))
    if changed:
        raise typer.BadParameter(f"--resume: {out} ran with other settings ({', '.join(changed)}: "
                                 f"{', '.join(f'{saved.get(k)} there, {current.get(k)} now' for k in changed)})")
    if not saved_results.is_file():
        return []
    return [Result(**row) for row in json.loads(saved_results.read_text())]


@bench_app.command("efficiency")
def efficiency(
    quick: bool = typer.Option(False, "--quick", help="two budgets, the loop and the best teacher alone, one seed, no ablations (10 minutes)"),
    profile: str | None = typer.Option(None, "--profile", help=(
        "default (26 arms sized for a CPU; its 22 arms of an earlier recipe took 50 minutes on 2 cores), quick "
        "(= --quick), or gpu: the default's arms on one H100/H200 (CUDA needed), batch 256, 2000 steps, 8 arms "
        "sharing the GPU (estimated 4.8 minutes)")),
    out: Path | None = typer.Option(None, "--out", help="folder for results.json, efficiency.png and the runs"),
    steps: int | None = typer.Option(None, "--steps", help="optimizer steps per arm (default 1300; quick 1000; gpu 2000)"),
    ladder: str | None = typer.Option(None, "--ladder", help="teacher-call budgets, comma-separated, e.g. 250,1000"),
    jobs: int = typer.Option(0, "--jobs", min=0, help="arms trained at once, one process each (0: one per CPU core; gpu: 8)"),
    resume: bool = typer.Option(False, "--resume", help="keep the arms an interrupted run in --out finished, run the rest"),
) -> None:
    """Naive distillation against the director's loop over a ladder of teacher-call budgets.

    Prints tables of held-out accuracy per domain against calls and dollars, the ablations, the
    selection rates and the student beside each teacher, each held-out mean with its 95% interval,
    then a headline block of R and S - T with theirs; writes OUT/results.json (each arm as it
    finishes), OUT/settings.json and OUT/efficiency.png. An interrupted run goes on with --resume
    and the same options. The last line is `efficiency ratio=<R> student=<S> best_teacher=<T>`.
    """
    # Wide enough for the tables when the output goes to a file rather than a terminal.
    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 140)
    settings = settings_from_options(quick, steps, ladder, profile)
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise typer.BadParameter("--profile gpu needs a CUDA GPU and torch sees none (torch.cuda.is_available() "
                                     "is False); on a CPU run the default profile or --quick")
    if resume and out is None:
        raise typer.BadParameter("--resume needs --out, the folder of the run to go on with")
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="evolvedirector-bench-"))
    resolved = base_config(out, 0, settings)
    recipe = recipe_of(resolved)
    if resume:
        results = load_finished(out, settings, recipe, console)
    elif (out / RESULTS_FILE).exists():
        raise typer.BadParameter(f"{out / RESULTS_FILE} exists: pass --resume to go on with that run, "
                                 "or another --out")
    else:
        results = []
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(out / SETTINGS_FILE, saved_settings_text(settings, recipe))

    def record(result: Result) -> None:
        results.append(result)
        console.print(f"  {result.arm:<22} B={result.budget:<5} seed={result.seed} calls={result.calls:<5} "
                      f"${result.dollars:7.2f}  mean={result_row(result)[-1]}  ({result.seconds:.0f}s)",
                      highlight=False)
        write_atomic(out / RESULTS_FILE, json.dumps([asdict(r) for r in results], indent=1).encode())

    def unfinished(arms: list[Arm]) -> list[Arm]:
        finished = {(r.arm, r.budget, r.seed) for r in results}
        todo = [arm for arm in arms if (arm.name, arm.budget, arm.seed) not in finished]
        for arm in todo:  # an interrupted arm starts again from nothing
            shutil.rmtree(out / "runs" / f"{arm.name}-{arm.budget}-{arm.seed}", ignore_errors=True)
        return todo

    def is_full_loop(result: Result) -> bool:  # the loop the ablations take out one operation from
        return result.arm == "loop" and result.budget == settings.ablation_budget and result.seed == settings.seeds[0]

    def ablations_after(full: Result) -> list[Arm]:
        win_rate = full.student_win_rate if full.student_win_rate is not None else 0.2
        return unfinished(ablation_arms(settings, win_rate))

    jobs = jobs or (GPU_JOBS if settings.device == "cuda" else os.cpu_count() or 1)
    low_res = (f", the first {resolved.train.low_res_steps} steps at {resolved.train.low_res_side} px"
               if resolved.train.low_res_side is not None else "")
    recipe_text = (f"the demo's student and recipe ({resolved.student.size}, batch {resolved.train.batch_size}, "
                   f"lr {resolved.train.lr:.2g}, timestep power {resolved.train.timestep_power:g}{low_res}"
                   + (f", on {settings.device}" if settings.device else "") + ")")
    console.print(f"[bold]bench efficiency[/bold]: ladder {list(settings.ladder)}, {settings.steps} steps per arm, "
                  f"seeds {list(settings.seeds)}, {settings.heldout_per_domain} held-out prompts per domain, {recipe_text}, "
                  f"{jobs} arms at a time; results in {out}" + (f" ({len(results)} arms already done)" if resume else ""))
    if settings.device == "cuda":
        console.print(f"estimated {gpu_estimate(settings, jobs) / 60:.1f} minutes on one H100/H200 (a model from a "
                      "26 ms step measured at batch 32, in bench/efficiency.py; not yet measured itself)")
    plan = unfinished(main_arms(settings))
    full = next((r for r in results if is_full_loop(r)), None)
    if full is not None:  # resumed after the full loop had finished
        plan += ablations_after(full)
    for result in run_arms(plan, settings, out / "runs", jobs,
                           follow_up=lambda r: ablations_after(r) if is_full_loop(r) else []):
        record(result)
    summarize(results, settings, out, console)


def summarize(results: list[Result], settings: Settings, out: Path, console: Console) -> None:
    """The tables, the plot, the headline block and the headline line, from the finished arms."""
    first_seed = settings.seeds[0]
    ladder = list(settings.ladder)
    table = Table("arm", "budget", "calls", "dollars", *grammar.DOMAINS, MEAN_COLUMN,
                  title=f"held-out accuracy by budget (seed {first_seed}; 95% bootstrap over held-out prompts)")
    for r in sorted((r for r in results if r.seed == first_seed and r.arm.startswith(("naive", "loop", CEILING))),
                    key=lambda r: (r.arm, r.budget)):
        table.add_row(r.arm, str(r.budget), str(r.calls), f"{r.dollars:.2f}", *result_row(r))
    console.print(table)

    if len(settings.seeds) > 1:
        table = Table("arm", "budget", "seeds", "mean over seeds [95% t]", "per seed [95% over prompts]",
                      title="headline arms across seeds")
        for arm in ("loop", *(naive_name(t) for t in settings.naive_teachers)):
            rows = sorted((r for r in results if r.arm == arm and r.budget == ladder[0]), key=lambda r: r.seed)
            over_seeds = mean_interval([r.accuracy[MEAN] for r in rows])
            table.add_row(arm, str(ladder[0]), str(len(rows)), interval_text(over_seeds),
                          "  ".join(f"{r.seed}: {result_row(r)[-1]}" for r in rows))
        console.print(table)

    ablations = ablation_arms(settings, 0.0)  # for their labels only: the win rate plays no part here
    if ablations:
        table = Table("ablation", "calls", *grammar.DOMAINS, MEAN_COLUMN,
                      title=f"ablations at B={settings.ablation_budget}")
        for label in ("loop", *(arm.label for arm in ablations)):
            r = next(r for r in results if r.arm == label and r.budget == settings.ablation_budget
                     and r.seed == first_seed)
            table.add_row(label, str(r.calls), *result_row(r))
        console.print(table)

    top = next(r for r in results if r.arm == "loop" and r.budget == ladder[-1] and r.seed == first_seed)
    table = Table("domain", *TEACHERS, title=f"selection rates: share of the loop's training samples (B={ladder[-1]})")
    for domain in grammar.DOMAINS:
        shares = top.selection.get(domain, {})
        table.add_row(domain, *(f"{shares.get(t, 0):.2f}" for t in TEACHERS))
    console.print(table)

    table = Table("arm", "budget", *grammar.DOMAINS, MEAN,
                  title="label accuracy: share of the training images that are correct, per domain")
    for r in sorted((r for r in results if r.seed == first_seed and r.label_accuracy), key=lambda r: (r.arm, r.budget)):
        table.add_row(r.arm, str(r.budget), *accuracy_row(r.label_accuracy))
    console.print(table)

    heldout = heldout_prompts(settings.heldout_per_domain, base_config(out, 0, settings).world.heldout_seed)
    teachers_own = teacher_outcomes(heldout)
    teachers = teacher_intervals(teachers_own)
    table = Table("who", *grammar.DOMAINS, MEAN_COLUMN, title="the student beside each teacher (held-out accuracy)")
    table.add_row(f"student (loop, B={ladder[-1]})", *result_row(top))
    ceiling = next((r for r in results if r.arm == CEILING), None)
    if ceiling is not None:
        table.add_row(f"student on perfect images (B={ceiling.budget})", *result_row(ceiling))
    for name, cells in teachers.items():
        table.add_row(name, *accuracy_row({key: cell["rate"] for key, cell in cells.items()}, cells))
    console.print(table)

    # -- the headline: every arm averaged over the seeds it ran ---------------------------------
    naive_curve = best_naive_curve(results, ladder)
    best = headline(results, ladder, first_seed, teachers_own)
    plot(results, first_seed, out / "efficiency.png", best.teacher)
    console.print(f"best naive arm per budget: {', '.join(f'{b}:{a:.3f}' for b, a in zip(ladder, naive_curve))}")
    ratios = {}
    for budget in ladder:  # the headline takes the smallest budget; the others show how it holds up
        loops = [r for r in results if r.arm == "loop" and r.budget == budget]
        mean, loop_calls = seed_mean(results, "loop", budget), statistics.mean(r.calls for r in loops)
        calls, sign = calls_needed(mean, ladder, naive_curve)
        ratios[budget] = calls / loop_calls
        console.print(f"loop at B={budget}: mean {mean:.3f} ({len(loops)} seed{'s' * (len(loops) > 1)}) with "
                      f"{loop_calls:.0f} calls; naive distillation needs {sign}{calls:.0f} calls for that: ratio "
                      f"{sign}{ratios[budget]:.2f}")
    if ceiling is not None:
        console.print(f"ceiling: the same student trained on {ceiling.budget} perfect images for {settings.steps} steps "
                      f"reaches {ceiling.accuracy[MEAN]:.3f}; the best teacher {best.teacher:.3f}")
    console.print(f"plot: {out / 'efficiency.png'}")
    for line in headline_lines(best, ladder, first_seed):
        console.print(line, highlight=False)
    console.print(f"efficiency ratio={ratios[ladder[0]]:.2f} student={top.accuracy[MEAN]:.3f} "
                  f"best_teacher={best.teacher:.3f}", highlight=False)


def headline_lines(best: Headline, ladder: list[int], first_seed: int) -> list[str]:
    """The headline block: R and S - T with their intervals and what each interval is over."""
    seeds = len(best.ratios)
    bounded = sum(1 for _, _, bound in best.ratios if bound)
    per_seed = " ".join(f"{seed}:{bound}{ratio:.2f}" for seed, ratio, bound in best.ratios)
    if seeds > 1:
        over = f"mean of {seeds} seeds' ratios, 95% t-interval over seeds"
    else:
        over = "one seed: no interval over seeds"
    r_line = (f"  R     = {interval_text(best.ratio)}  at budget {ladder[0]}: {over} (per seed {per_seed}; "
              "each seed's loop against the seed-averaged best naive curve)")
    if bounded:
        r_line += f"; {bounded} of {seeds} at a bound of the ladder, counted as their bound"
    over = ("95% paired bootstrap over held-out prompts" if best.gap.get("low") is not None
            else "no interval (results saved without per-prompt outcomes)")
    return ["headline:", r_line,
            f"  S - T = {interval_text(best.gap)}  at budget {ladder[-1]}: the loop (seed {first_seed}, the one seed "
            f"run there) {best.student:.2f} minus {best.best_teacher}'s own {best.teacher:.2f}; {over}, "
            "seed-to-seed spread not included"]
