"""`evolvedirector judge-bench`: measure a director before a run trusts it.

The director comes from a config file (a run config's `director:` section, or that section
alone), then from the options, which override it; with neither it is the shapes-world judge.
`--base-url` alone selects the `openai` backend. The figures are computed in
`evolvedirector.bench.judge_bench`; the last printed line is machine-readable:
`accuracy=<a> position_bias=<b> parse_failures=<c>`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer
import yaml
from rich.console import Console

console = Console(soft_wrap=True, highlight=False)


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {message}")
    raise typer.Exit(code=2)


def judge_bench(
    pairs: Path | None = typer.Option(
        None, "--pairs", help="JSONL, one pair a line: {prompt, image_a, image_b, preferred: A|B}; image paths "
        "relative to the file"),
    prompts: Path | None = typer.Option(None, "--prompts", help="text file, one prompt a line: expansion figures"),
    synthetic: bool = typer.Option(False, "--synthetic", help="auto-labelled shapes-world pairs and prompts"),
    count: int = typer.Option(64, "--count", min=1, help="synthetic pairs (and a quarter as many prompts)"),
    config: Path | None = typer.Option(None, "--config", help="YAML: a run config or a director section"),
    backend: str | None = typer.Option(None, "--backend", help="shapes, openai or local"),
    base_url: str | None = typer.Option(
        None, "--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1"),
    model: str | None = typer.Option(None, "--model", help="served model name, or a local model folder"),
    api_key_env: str | None = typer.Option(None, "--api-key-env", help="NAME of the variable holding the API key"),
    mode: str | None = typer.Option(None, "--mode", help="pairwise or pointwise"),
    both_orders: bool | None = typer.Option(None, "--both-orders/--one-order", help="pairwise: ask both orders"),
    structured_output: str | None = typer.Option(
        None, "--structured-output", help="none, structured_outputs, guided_choice or response_format"),
    extend_num: int = typer.Option(3, "--n", min=1, help="prompts asked per expansion"),
    concurrency: int = typer.Option(8, "--concurrency", min=1, help="verdicts in flight at once"),
    seed: int = typer.Option(0, "--seed", help="seed of the synthetic pairs and of the director"),
    save_pairs: Path | None = typer.Option(
        None, "--save-pairs", help="also write the synthetic pairs here (PNG + JSONL)"),
) -> None:
    """Discrimination accuracy, position bias, parse failures, latency and throughput of a director on
    labelled pairs (each judged in both orders), and the validity and diversity of its expansions.

    Offline: `evolvedirector judge-bench --synthetic` (the shapes-world judge). A served VLM:
    `evolvedirector judge-bench --synthetic --base-url http://127.0.0.1:8000/v1 --model NAME`.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (pairs or prompts or synthetic):
        _fail("give --pairs FILE, --prompts FILE or --synthetic")
    overrides = {"backend": backend, "base_url": base_url, "model": model, "api_key_env": api_key_env,
                 "mode": mode, "both_orders": both_orders, "structured_output": structured_output}
    director_config = _director_config(config, {k: v for k, v in overrides.items() if v is not None})

    from evolvedirector.director import DirectorError, build_director
    from evolvedirector.director.failures import never_answered
    from evolvedirector.bench.judge_bench import (
        PairsError, bench_discrimination, bench_expansion, load_pairs, report_lines, save_pairs as write_pairs,
        shapes_world_prompt, synthetic_pairs, synthetic_prompts,
    )

    labelled, sources = [], []
    try:
        if pairs is not None:
            labelled += load_pairs(pairs)
        if prompts is not None:
            if not prompts.is_file():
                _fail(f"prompts file {prompts} does not exist")
            sources += [line.strip() for line in prompts.read_text().splitlines() if line.strip()]
    except PairsError as error:
        _fail(str(error))
    if synthetic:
        made = synthetic_pairs(count, seed=seed)
        labelled += made
        sources += synthetic_prompts(max(1, count // 4), seed=seed)
        if save_pairs is not None:
            console.print(f"wrote {write_pairs(made, save_pairs)}")
    # In the shapes world a proposal counts only if it is a prompt of the grammar.
    shapes_only = synthetic and prompts is None
    try:
        director = build_director(director_config, seed=seed)
    except DirectorError as error:
        _fail(str(error))
    console.print(f"director: {_describe(director_config)}")
    if labelled:
        console.print(f"pairs: {len(labelled)}" + (" (shapes world: a correct render against a mistaken one)"
                                                    if synthetic and pairs is None else ""))

    async def run():
        try:
            judged = await bench_discrimination(director, labelled, concurrency) if labelled else None
            expanded = await bench_expansion(director, sources, extend_num, shapes_world_prompt if shapes_only
                                             else None, concurrency) if sources else None
        finally:
            await director.aclose()
        return judged, expanded

    try:
        judged, expanded = asyncio.run(run())
    except DirectorError as error:
        _fail(str(error))
    tally = director.take_tally()
    if tally.failed_every_call():  # figures of nothing would only mislead
        _fail(str(never_answered(director.where(), "the bench", tally)))
    for line in report_lines(judged, expanded, concurrency):
        console.print(line)


def _director_config(path: Path | None, overrides: dict):
    from evolvedirector.config import ConfigError, parse_config

    data: dict = {}
    if path is not None:
        if not path.is_file():
            _fail(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            _fail(f"config file {path} is not valid YAML: {error}")
        if not isinstance(loaded, dict):
            _fail(f"config file {path} is not a mapping of fields")
        data = dict(loaded.get("director", loaded) or {})
    if "base_url" in overrides and "backend" not in overrides:
        data["backend"] = "openai"
    data.update(overrides)
    # The bench shows each pair in both orders itself, so a VLM director must not shuffle them again:
    # a position bias should show, not hide in the accuracy. (both_orders, if asked, still applies.)
    if data.get("backend", "shapes") != "shapes":
        data.setdefault("shuffle", False)
    try:
        return parse_config({"director": data}, str(path) if path else "the judge-bench options").director
    except ConfigError as error:
        _fail(str(error))


def _describe(config) -> str:
    if config.backend == "shapes":
        return f"shapes-world judge (judge_accuracy {config.judge_accuracy:g})"
    where = f"at {config.base_url}" if config.backend == "openai" else f"on {config.device}"
    return (f"{config.backend} model {config.model!r} {where}, {config.mode}"
            + (", both orders" if config.both_orders and config.mode == "pairwise" else "")
            + (f", structured output {config.structured_output}" if config.backend == "openai" else ""))
