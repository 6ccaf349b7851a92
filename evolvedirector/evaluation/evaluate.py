"""`evolvedirector eval RUN_DIR`: the run's latest student against each of its teachers.

On a prompt set (the run's held-out prompts by default, a sample of its training set, or a file):
1. the student (EMA weights of the latest checkpoint) draws every prompt; its images go into the
   run's content-addressed store;
2. each teacher's image of every prompt comes through the run's ledger, under the same
   idempotency key the loop uses (teacher, prompt, seed 0, size, and a training prompt's
   bucket): an image already paid for is reused, never bought again, and a new one is bought
   once for every later evaluation;
3. the configured director compares the student with each teacher per prompt. With both orders
   (the default) a pair is a win when the director prefers the student in both orders, a loss
   when it prefers the teacher in both, and a tie when its verdict follows the position;
4. win / tie / lose rates per teacher and category (the world's: the shapes world's domains, a
   prompt file's categories), with bootstrap confidence intervals; in the
   shapes world, held-out accuracy per domain of the student and of each teacher; the share of
   training samples taken from each teacher per category; Fréchet distances (FD-randconv always,
   FID proper with a user-supplied Inception network).

Results go to RUN_DIR/eval/eval.json and the rebuilt RUN_DIR/report.html.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from evolvedirector.config import RunConfig, load_config
from evolvedirector.director import build_director
from evolvedirector.director.failures import describe_kinds, never_answered
from evolvedirector.evaluation.frechet import (
    RANDCONV_DESCRIPTION, RANDCONV_NAME, RandomConvFeatures, TorchScriptInception, frechet_distance,
)
from evolvedirector.evaluation.report import selection_table, write_report
from evolvedirector.evaluation.stats import OUTCOMES, format_rate, outcome_rates
from evolvedirector.seeds import seed_for
from evolvedirector.store import ImageStore, Store, write_atomic
from evolvedirector.store.db import parse_bucket
from evolvedirector.student.latest import NoStudentYet, load_latest_student
from evolvedirector.worlds import OTHER, World, build_world


class EvalError(ValueError):
    """An evaluation that cannot start; the message says what is missing and how to get it."""


@dataclass
class EvalOptions:
    prompt_set: str = "heldout"  # "heldout", "train", or the path of a file with one prompt per line
    limit: int | None = None  # at most this many prompts, drawn at random with `seed`
    seed: int = 0  # student noise, prompt sampling, the director's coin and the bootstrap
    both_orders: bool = True
    resamples: int = 1000
    inception: Path | None = None  # TorchScript Inception-v3 FID network: FID proper
    max_new_calls: int | None = None  # cap on teacher calls this evaluation may add to the ledger
    max_new_dollars: float | None = None


def choose_prompts(options: EvalOptions, world: World, store: Store) -> list[str]:
    if options.prompt_set == "heldout":
        prompts = world.heldout
    elif options.prompt_set == "train":
        prompts = sorted({s.prompt for s in store.active_samples()})
        if not prompts:
            raise EvalError("the run's active set is empty: use --prompts heldout or a prompts file")
    else:
        path = Path(options.prompt_set)
        if not path.is_file():
            raise EvalError(f"--prompts {options.prompt_set}: not 'heldout', 'train' or an existing file")
        prompts = list(dict.fromkeys(line.strip() for line in path.read_text().splitlines() if line.strip()))
        if not prompts:
            raise EvalError(f"prompts file {path} has no prompts")
    if options.limit is not None and options.limit < len(prompts):
        keep = set(random.Random(options.seed).sample(range(len(prompts)), options.limit))
        prompts = [p for i, p in enumerate(prompts) if i in keep]  # keeps the domains grouped
    return prompts


async def buy_teacher_images(
    config: RunConfig, store: Store, images: ImageStore, prompts: list[str], options: EvalOptions, round: int,
    buckets: dict[str, tuple[int, int] | None],
) -> tuple[dict[str, list[str | None]], dict]:
    """{teacher: image hash or None per prompt}, through the ledger (reused when already paid for)."""
    from evolvedirector.teachers import ImageRequest, Ledger, build_teacher
    from evolvedirector.teachers.seeding import TEACHER_SEED  # the loop's key, so training images are reused

    calls, dollars = store.spend()
    ledger = Ledger.for_run(store, images, config.budget, max_new_calls=options.max_new_calls,
                            max_new_dollars=options.max_new_dollars)
    teachers = [build_teacher(t) for t in config.teachers]
    size = config.world.image_size
    # A training prompt is asked at the bucket it was bought at (`buckets`), so its key is the
    # loop's and its images are reused; any other prompt as a square.
    requests = [ImageRequest(p, TEACHER_SEED, size, buckets.get(p)) for p in prompts]
    bought = await asyncio.gather(*(ledger.buy(teacher, requests, round) for teacher in teachers))
    hashes: dict[str, list[str | None]] = {}
    counts = {"reused": 0, "new": 0, "missing": 0, "errors": []}
    for teacher, purchases in zip(teachers, bought):
        hashes[teacher.name] = [p.image_hash for p in purchases]
        for purchase in purchases:
            if purchase.image_hash is None:
                counts["missing"] += 1
                if purchase.error and len(counts["errors"]) < 5:
                    counts["errors"].append(f"{teacher.name}: {purchase.error}")
            elif purchase.reused:
                counts["reused"] += 1
            else:
                counts["new"] += 1
    if ledger.exhausted:  # the run's budget, or this evaluation's own cap, is spent
        counts["budget"] = next(p.error for ps in bought for p in ps if p.error and "budget" in p.error)
    calls_after, dollars_after = store.spend()
    counts["new_calls"] = calls_after - calls
    counts["new_dollars"] = round_money(dollars_after - dollars)
    return hashes, counts


def round_money(value: float) -> float:
    return float(f"{value:.6f}")


async def judge_all(director, items: list[tuple[str, np.ndarray, np.ndarray]], both_orders: bool, seed: int):
    """One outcome ("win", "tie", "lose" for the student, or None when the director failed) per item."""
    rng = random.Random(seed)
    orders = [rng.random() < 0.5 for _ in items]  # one-order mode: the student's side, drawn at random

    async def judge(item, student_first: bool) -> str | None:
        prompt, student, teacher = item
        if both_orders:
            first = await director.compare(prompt, student, teacher)
            second = await director.compare(prompt, teacher, student)
            if first.winner is None or second.winner is None:
                return None  # counted as a judging failure, not as a loss
            votes = (first.winner == "A") + (second.winner == "B")
            return ("lose", "tie", "win")[votes]
        verdict = await director.compare(*((prompt, student, teacher) if student_first else (prompt, teacher, student)))
        if verdict.winner is None:
            return None
        return "win" if verdict.winner == ("A" if student_first else "B") else "lose"

    # Everything in flight at once, so that a served director can batch the requests.
    return await asyncio.gather(*(judge(item, first) for item, first in zip(items, orders)))


def run_eval(run_dir: Path, options: EvalOptions, console: Console | None = None) -> dict:
    console = console or Console()
    run_dir = Path(run_dir)
    if not (run_dir / "evolve.db").is_file():
        raise EvalError(f"{run_dir} is not a run folder (no evolve.db in it)")
    config = load_config(run_dir / "config.yaml", overrides={"out": str(run_dir)})
    inception = TorchScriptInception(options.inception) if options.inception is not None else None  # fail early
    store = Store(run_dir / "evolve.db")
    try:
        return _run_eval(run_dir, config, store, options, console, inception)
    finally:
        store.close()


def _run_eval(run_dir: Path, config: RunConfig, store: Store, options: EvalOptions, console: Console,
              inception: TorchScriptInception | None) -> dict:
    """Steps 1-4 of the module's docstring, in that order; the results are written, printed and
    shown in the rebuilt report."""
    images = ImageStore(run_dir / "images")
    try:
        student, checkpoint = load_latest_student(run_dir, config, store)
    except NoStudentYet as error:
        raise EvalError(str(error)) from None
    world = build_world(config, text_encoder=student.text)
    prompts = choose_prompts(options, world, store)
    known = {s.prompt: s for s in store.all_samples()}  # director-written prompts' categories and buckets
    domains = [known[p].domain if p in known else world.category(p) for p in prompts]
    console.print(f"evaluating {checkpoint['checkpoint']} (round {checkpoint['round']}, step "
                  f"{checkpoint['train_step']}) on {len(prompts)} {options.prompt_set} prompts", highlight=False)

    started = time.time()
    student_images = student.generate(prompts, seed=options.seed)
    student_hashes = [images.put(image) for image in student_images]

    teacher_hashes, purchases = asyncio.run(
        buy_teacher_images(config, store, images, prompts, options, round=checkpoint["round"],
                           buckets={p: parse_bucket(s.bucket) for p, s in known.items()})
    )
    _print_purchases(purchases, console)
    teacher_images = {
        name: [images.get(h) if h else None for h in hashes] for name, hashes in teacher_hashes.items()
    }

    by_pair, tally = judge_against_teachers(config, options, world, prompts, student_images, teacher_images)
    rates = win_rates(by_pair, list(teacher_images), domains, world.categories, options)
    accuracies, correct = grade_against_teachers(world, prompts, domains, student_images, teacher_images)
    frechet, fid = frechet_against_teachers(student_images, teacher_images, len(prompts), inception, options)
    items = eval_items(prompts, domains, student_hashes, teacher_hashes, by_pair, correct)
    results = {
        "created_at": time.time(),
        "categories": [c for c in (*world.categories, OTHER) if c in domains],
        "seconds": round(time.time() - started, 2),
        "checkpoint": checkpoint["checkpoint"],
        "round": checkpoint["round"],
        "train_step": checkpoint["train_step"],
        "prompt_set": options.prompt_set if options.prompt_set in ("heldout", "train") else "file",
        "n_prompts": len(prompts),
        "seed": options.seed,
        "director": {
            "backend": config.director.backend, "both_orders": options.both_orders, "resamples": options.resamples,
            "failures": sum(o is None for o in by_pair.values()),
            "failure_kinds": dict(tally.by_kind()),
        },
        "teachers": list(teacher_images),
        "purchases": purchases,
        "win_rates": rates,
        "accuracy": accuracies,
        "selection": selection_table(store),
        "frechet": frechet,
        "fid": fid,
        "items": items,
    }
    target = run_dir / "eval" / "eval.json"
    write_atomic(target, json.dumps(results, indent=1).encode())
    print_results(results, console)
    report = write_report(store, run_dir)
    console.print(f"results: {target}\nreport: {report}", highlight=False)
    return results


def _print_purchases(purchases: dict, console: Console) -> None:
    console.print(f"teacher images: {purchases['reused']} reused, {purchases['new']} bought "
                  f"(${purchases['new_dollars']:.2f}), {purchases['missing']} missing", highlight=False)
    if "budget" in purchases:
        console.print(f"[yellow]not bought: {purchases['budget']} (the run's budget.max_dollars and "
                      "budget.max_teacher_calls cover eval's purchases too; --max-calls / --max-dollars "
                      "only lower them)[/yellow]", highlight=False)


Images = dict[str, list[np.ndarray | None]]  # {teacher: its image of each prompt, None where it has none}


def judge_against_teachers(config: RunConfig, options: EvalOptions, world: World, prompts: list[str],
                           student_images: list[np.ndarray], teacher_images: Images):
    """({(teacher, prompt index): "win", "tie", "lose" or None (the director failed)} for every
    prompt the teacher has an image of, the director's tally); a director that answered no call
    stops the evaluation."""
    director = build_director(config.director, seed=seed_for(config.seed, "evaluation director", options.seed),
                              exclude=world.heldout)
    jobs = [
        (name, i) for name in teacher_images for i in range(len(prompts)) if teacher_images[name][i] is not None
    ]

    async def judge_everything():
        try:
            return await judge_all(
                director, [(prompts[i], student_images[i], teacher_images[name][i]) for name, i in jobs],
                options.both_orders, options.seed,
            )
        finally:
            await director.aclose()

    outcomes = asyncio.run(judge_everything())
    tally = director.take_tally()
    if tally.failed_every_call():
        raise EvalError(str(never_answered(director.where(), "this evaluation", tally)))
    return dict(zip(jobs, outcomes)), tally


def win_rates(by_pair: dict[tuple[str, int], str | None], teachers: list[str], domains: list[str],
              categories: tuple[str, ...], options: EvalOptions) -> dict[str, dict]:
    """{teacher: {category (the world's order, then OTHER, then "all"): outcome rates with bootstrap intervals}}."""
    rates: dict[str, dict] = {}
    for name in teachers:
        cells: dict[str, list[str]] = {}
        for (teacher, i), outcome in by_pair.items():
            if teacher == name and outcome is not None:
                cells.setdefault(domains[i], []).append(outcome)
                cells.setdefault("all", []).append(outcome)
        order = (*categories, OTHER, "all")
        rates[name] = {
            cell: outcome_rates(values, resamples=options.resamples, seed=options.seed)
            for cell, values in sorted(cells.items(), key=lambda kv: _position(kv[0], order))
        }
    return rates


def grade_against_teachers(world: World, prompts: list[str], domains: list[str], student_images: list[np.ndarray],
                           teacher_images: Images) -> tuple[dict | None, dict[str, list[bool | None]]]:
    """Where the world grades exactly and knows every prompt's category: held-out accuracy per
    category of the student and of each teacher, and whether each image is correct (None: no image);
    (None, {}) elsewhere."""
    if not (world.graded and all(d in world.categories for d in domains)):
        return None, {}
    accuracies = {"student": world.grade(prompts, student_images)}
    correct = {"student": [world.grade([p], [im])["mean"] == 1.0 for p, im in zip(prompts, student_images)]}
    for name, teacher_list in teacher_images.items():
        have = [i for i, im in enumerate(teacher_list) if im is not None]
        if have:
            accuracies[name] = world.grade([prompts[i] for i in have], [teacher_list[i] for i in have])
        correct[name] = [world.grade([p], [im])["mean"] == 1.0 if im is not None else None
                         for p, im in zip(prompts, teacher_list)]
    return accuracies, correct


def frechet_against_teachers(student_images: list[np.ndarray], teacher_images: Images, n: int,
                             inception: TorchScriptInception | None, options: EvalOptions) -> tuple[dict, dict | None]:
    """FD-randconv of the student's images against each teacher's (of two images or more), and FID
    proper with an Inception network."""
    frechet = {"feature": RANDCONV_NAME, "description": RANDCONV_DESCRIPTION, "n": n, "values": {}}
    fid = None
    features = RandomConvFeatures()
    for name, teacher_list in teacher_images.items():
        have = [im for im in teacher_list if im is not None]
        if len(have) >= 2 and len(student_images) >= 2:
            frechet["values"][name] = frechet_distance(have, student_images, features)
            if inception is not None:
                fid = fid or {"feature": "FID (Inception-v3, pool3)", "network": options.inception.name, "values": {}}
                fid["values"][name] = frechet_distance(have, student_images, inception)
    return frechet, fid


def eval_items(prompts: list[str], domains: list[str], student_hashes: list[str],
               teacher_hashes: dict[str, list[str | None]], by_pair: dict[tuple[str, int], str | None],
               correct: dict[str, list[bool | None]]) -> list[dict]:
    """One entry per prompt: the student's image and each teacher's, the director's outcome, and
    whether each is correct where the world grades."""
    items = []
    for i, prompt in enumerate(prompts):
        item = {"prompt": prompt, "domain": domains[i], "student_image": student_hashes[i], "teachers": {}}
        if correct:
            item["student_correct"] = correct["student"][i]
        for name in teacher_hashes:
            entry = {"image": teacher_hashes[name][i], "outcome": by_pair.get((name, i))}
            if correct:
                entry["correct"] = correct[name][i]
            item["teachers"][name] = entry
        items.append(item)
    return items


def _position(name: str, order: tuple[str, ...]) -> int:
    return order.index(name) if name in order else len(order)


def print_results(results: dict, console: Console) -> None:
    table = Table(title="student against each teacher, per category (director; rate [95% bootstrap CI])")
    for column in ("teacher", "category", "pairs", "student wins", "ties", "teacher wins"):
        table.add_column(column, justify="left" if column in ("teacher", "domain") else "right")
    for teacher, cells in results["win_rates"].items():
        for domain, cell in cells.items():
            table.add_row(teacher, domain, str(cell["n"]), *(format_rate(cell[o]) for o in OUTCOMES),
                          end_section=domain == "all")
    console.print(table)
    if results["director"]["failures"]:
        kinds = describe_kinds(results["director"].get("failure_kinds", {}))
        console.print(f"[yellow]{results['director']['failures']} pairs could not be judged (the director gave no "
                      f"usable answer: {kinds})[/yellow]", highlight=False)

    if results["accuracy"]:
        table = Table(title=f"held-out accuracy ({results['prompt_set']} prompts, world rules)")
        columns = [c for c in (*results["categories"], "mean") if c in results["accuracy"]["student"]]
        table.add_column("model")
        for column in columns:
            table.add_column(column, justify="right")
        for model, values in results["accuracy"].items():
            table.add_row(model, *(f"{values[c]:.2f}" if c in values else "-" for c in columns))
        console.print(table)

    table = Table(title="training samples per teacher and category (share of the category)")
    for column in ("category", "teacher", "samples", "share", "active", "active share"):
        table.add_column(column, justify="left" if column in ("domain", "teacher") else "right")
    for row in results["selection"]:
        active_share = "-" if row["active_share"] is None else f"{row['active_share']:.2f}"
        table.add_row(row["domain"], row["teacher"], str(row["samples"]), f"{row['share']:.2f}",
                      str(row["active"]), active_share)
    console.print(table)

    table = Table(title=f"Fréchet distance, student against each teacher ({results['n_prompts']} images each)")
    table.add_column("teacher")
    table.add_column(results["frechet"]["feature"], justify="right")
    if results["fid"]:
        table.add_column("FID", justify="right")
    for teacher in results["teachers"]:
        row = [teacher, _number(results["frechet"]["values"].get(teacher))]
        if results["fid"]:
            row.append(_number(results["fid"]["values"].get(teacher)))
        table.add_row(*row)
    console.print(table)
    console.print(f"{results['frechet']['feature']}: {results['frechet']['description']}."
                  + ("" if results["fid"] else " FID proper: pass --inception PATH (TorchScript Inception-v3)."),
                  highlight=False)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
