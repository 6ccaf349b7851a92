"""The `evolvedirector` command."""

from __future__ import annotations

import os
from pathlib import Path

# OpenMP threads that spin while they wait for work collapse when another program shares the cores
# (GNU OpenMP spins 300,000 times by default). Measured on 2 cores (AVX-512), the demo student's
# step with 2 threads, alternating runs: idle 0.127 s with 1000 spins against 0.123 s by default;
# beside one busy process 0.26 s against 0.39 s. OMP_WAIT_POLICY=PASSIVE gave 0.22 s busy but
# 0.15 s idle. Set before torch loads OpenMP. GOMP_SPINCOUNT would override a user's
# OMP_WAIT_POLICY, so either one exported by the user leaves it unset.
if "GOMP_SPINCOUNT" not in os.environ and "OMP_WAIT_POLICY" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

import typer  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import evolvedirector.bench.efficiency  # noqa: F401  (registers `bench efficiency`)
import evolvedirector.bench.loop  # noqa: F401  (registers `bench loop`)
import evolvedirector.bench.student  # noqa: F401  (registers `bench student`)
import evolvedirector.bench.teachers  # noqa: F401  (registers `bench teachers`)
import evolvedirector.bench.threads  # noqa: F401  (registers `bench threads`)
import evolvedirector.bench.train  # noqa: F401  (registers `bench train`)
from evolvedirector.bench import bench_app
from evolvedirector.config import ConfigError, RunConfig, check_model_paths, demo_config_path, load_config
from evolvedirector.loop.run_folder import RunFolderError
from evolvedirector.loop.run_lock import RunLock
from evolvedirector.loop.run_safety import check_store_file, saved_config

app = typer.Typer(
    help=(
        "EvolveDirector: train an open text-to-image student on a small dataset that a "
        "vision-language director keeps curating from advanced teacher models.\n\n"
        "Start with `evolvedirector demo`: the whole loop in the shapes world, on a CPU, in minutes. "
        "Then `evolvedirector status runs/demo` and `evolvedirector sample runs/demo --prompts FILE --out DIR`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(bench_app, name="bench")
# `evolvedirector judge-bench`: how well a director judges and proposes (evolvedirector/bench/judge.py).
from evolvedirector.bench.judge import judge_bench  # noqa: E402

app.command("judge-bench")(judge_bench)
console = Console(soft_wrap=True)  # long paths and round lines stay on one line in logs
DEBUG_VARIABLE = "EVOLVEDIRECTOR_DEBUG"


@app.callback()
def _options(debug: bool = typer.Option(
    False, "--debug", envvar=DEBUG_VARIABLE, help="on a failure, show the traceback instead of one line"
)) -> None:
    if debug:
        os.environ[DEBUG_VARIABLE] = "1"  # read by main() once the command has failed


def main() -> None:
    """The `evolvedirector` command: a failure is one line that names its cause, exit code 2 for bad
    input (a config field, a file, a folder, a value) and 1 for anything else; `--debug` shows the
    traceback instead."""
    try:
        app()
    except Exception as error:
        if os.environ.get(DEBUG_VARIABLE):
            raise
        console.print(f"[bold red]error:[/bold red] {one_line(error)}", highlight=False)
        console.print("(`evolvedirector --debug COMMAND ...` shows where it happened)", style="dim", highlight=False)
        bad_input = isinstance(error, (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                                       PermissionError))
        raise SystemExit(2 if bad_input else 1) from None


def one_line(error: BaseException, limit: int = 400) -> str:
    """The message as one line; a library's own error type is named, since its words may not say it."""
    text = " ".join(str(error).split()) or "(no message)"
    if type(error) is not ValueError and not type(error).__module__.startswith("evolvedirector"):
        text = f"{type(error).__name__}: {text}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False)
    raise typer.Exit(code=2)


def _resolve(config: RunConfig) -> RunConfig:
    """An existing run resumes with its own saved config; only the budget may be raised. A start
    that failed before it bought or trained anything takes the command's (corrected) config."""
    try:
        previous = saved_config(config.out)
        if previous is None or not check_store_file(config.out):  # nothing bought or trained yet
            return config
    except RunFolderError as error:
        _fail(str(error))
    if previous.model_dump(exclude={"budget"}) != config.model_dump(exclude={"budget"}):
        console.print(f"[yellow]note:[/yellow] {config.out} exists; resuming with its saved config.yaml "
                      "(only the budget is taken from this command)")
    previous.budget = config.budget
    return previous


def _evolve(config: RunConfig, source: str, check: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time
    from evolvedirector.director import DirectorError
    from evolvedirector.loop import Evolution  # heavy imports only when a run starts
    from evolvedirector.loop.stopping import EmptySet
    from evolvedirector.loop.tracking import TrackerUnavailable
    from evolvedirector.teachers.health import TeachersFailed

    config = _resolve(config)
    try:
        check_model_paths(config, source)
    except ConfigError as error:
        _fail(str(error))
    if check:  # before anything is bought, or the student is even loaded
        _preflight_or_stop(config)
    try:
        # DirectorError here: the director cannot be set up (an unset key variable, a missing model).
        evolution = Evolution(config, console=console)
    except (TrackerUnavailable, RunFolderError, DirectorError) as error:
        _fail(str(error))
    try:
        evolution.run()
    # A part that never answered is not bad input: exit 1, as for any failure at run time, with
    # one line for the director or one per teacher. The run resumes once it is fixed.
    except (DirectorError, TeachersFailed, EmptySet) as error:
        for line in getattr(error, "lines", [str(error)]):
            console.print(f"[bold red]error:[/bold red] {line}", highlight=False, soft_wrap=True)
        raise typer.Exit(code=1) from None
    console.print(f"report: {Path(config.out) / 'report.html'}")


@app.command()
def demo(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="run folder; run again on the same folder to resume"),
) -> None:
    """Run the whole loop in the shapes world with the teachers atlas, quill and tally: a seed round
    and 8 rounds of 500 training steps (about 8 minutes on a 2-core AVX-512 CPU, about three times
    as long on a 2-core AVX2 one; the first line says how long here).

    Prints one line per round (set size, teacher-win rate, added/deleted/mutated, teacher calls,
    spend, held-out accuracy per domain) and writes OUT/report.html. Interrupt it at any time:
    the same command resumes after the last finished round and never buys an image twice.
    """
    try:
        config = load_config(demo_config_path(), overrides={"out": str(out)})
    except ConfigError as error:
        _fail(str(error))
    _evolve(config, str(demo_config_path()))


@app.command()
def run(config_file: Path = typer.Argument(
    ..., help="YAML file; start from evolvedirector/configs/demo.yaml (shapes) or pixart-512.yaml (your prompts)"
), no_check: bool = typer.Option(
    False, "--no-check", help="skip the free preflight of the teachers and the director (see `check`)"
)) -> None:
    """Run the loop from a config file (resumes when its `out` folder already holds a run).

    `world: {name: prompts, prompts: FILE}` evolves your own prompts (.txt, .tsv/.csv with a
    `prompt` column, .jsonl); the default is the shapes world. Every field has a default (the
    paper's where it gives one); unknown or invalid fields are refused with their name and the
    reason. First, each teacher's free call and the director's model list are checked, as
    `evolvedirector check` does (with its judge question too when the director is pointwise or
    structured): a wrong key or URL stops the run in seconds, with a line per part.
    """
    try:
        config = load_config(config_file)
    except ConfigError as error:
        _fail(str(error))
    _evolve(config, str(config_file), check=not no_check)


def _preflight_or_stop(config: RunConfig) -> None:
    import asyncio

    from evolvedirector.loop.preflight import FAILED, SETUP, preflight

    # One director question only where the config relies on what a server may silently ignore
    # (logprobs, structured output: `transformers serve` ignores both).
    director = config.director
    ask = director.backend == "openai" and (director.mode == "pointwise" or director.structured_output != "none")
    failed = [c for c in asyncio.run(preflight(config, ask_director=ask)) if c.status == FAILED]
    # A part that cannot even be set up (an unset key variable) is left to the run's own error when
    # it is the only trouble; beside another failure it is listed too, so that one try shows all.
    if all(check.step == SETUP for check in failed):
        return
    for check in failed:
        console.print(f"[bold red]error:[/bold red] {check.line()}", highlight=False, soft_wrap=True)
    console.print("(nothing was bought; `evolvedirector check CONFIG` shows every part, `run --no-check` "
                  "skips this)", style="dim", highlight=False)
    raise typer.Exit(code=1)


@app.command()
def check(config_file: Path = typer.Argument(..., help="the YAML file `run` would take"),
          buy_one: bool = typer.Option(False, "--buy-one", help=(
              "also buy one image from each teacher (billed; kept in OUT/preflight/evolve.db)"))) -> None:
    """Check a config before anything is bought: each teacher's reachability and key through its
    provider's free call (a model list, an account, a balance), and the director's server: that it
    serves director.model, answers one real judge question about a canvas (held to
    structured_output when set), and returns logprobs in pointwise mode. Prints a table and what
    the budget lets the run buy; exits 0 only when every part that can be checked works.
    """
    import asyncio

    from evolvedirector.loop.preflight import FAILED, NOT_CHECKED, OK, estimate_line, preflight

    try:
        config = load_config(config_file)
    except ConfigError as error:
        _fail(str(error))
    ledger = None
    if buy_one:
        from evolvedirector.store import ImageStore, Store
        from evolvedirector.teachers import Ledger

        folder = Path(config.out) / "preflight"
        folder.mkdir(parents=True, exist_ok=True)
        ledger = Ledger(Store(folder / "evolve.db"), ImageStore(folder / "images"))
    checks = asyncio.run(preflight(config, ask_director=True, buy_one=buy_one, ledger=ledger))
    table = Table("part", "host", "check", "status", "latency", "answer (a failure's fix: below)")
    colour = {OK: "green", FAILED: "bold red", NOT_CHECKED: "yellow"}
    for each in checks:
        answer = each.detail.split(":")[0] if each.status == FAILED else each.detail
        table.add_row(each.part, each.host, each.step, f"[{colour[each.status]}]{each.status}[/]",
                      f"{each.seconds * 1000:.0f} ms", answer[:60])
    console.print(table)
    console.print(estimate_line(config), highlight=False)
    failed = [c for c in checks if c.status == FAILED]
    for each in failed:
        console.print(f"[bold red]error:[/bold red] {each.line()}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(code=1)
    unchecked = sum(c.status == NOT_CHECKED for c in checks)
    console.print(f"all {sum(c.status == OK for c in checks)} checks passed"
                  + (f", {unchecked} not checked" if unchecked else ""), highlight=False)


def _open_store(run_dir: Path):
    from evolvedirector.store import Store

    try:
        check_store_file(run_dir)  # damaged or emptied: refused, never read as a new run
    except RunFolderError as error:
        _fail(str(error))
    if not (Path(run_dir) / "evolve.db").is_file():
        _fail(f"{run_dir} is not a run folder (no evolve.db in it)")
    return Store(Path(run_dir) / "evolve.db")


@app.command()
def status(run_dir: Path = typer.Argument(..., help="a run folder")) -> None:
    """Rounds, set size by category, verdicts, refused proposals by reason, teacher calls and
    spend of a run (safe while it runs)."""
    store = _open_store(run_dir)
    rounds = store.rounds()
    last = rounds[-1] if rounds else None
    console.print(f"[bold]{run_dir}[/bold]")
    console.print(f"rounds committed: {len(rounds)} (last: {last['round'] if last else '-'})")
    console.print(f"set size: {len(store.active_samples())} active of {store.count_samples()} ever added")
    verdicts = store.verdict_counts()
    console.print(f"verdicts: {sum(verdicts.values())} (teacher won {verdicts.get('teacher', 0)}, "
                  f"student won {verdicts.get('student', 0)})")
    categories = store.domain_counts()
    if categories:
        console.print("active set by category: " + ", ".join(f"{domain} {n}" for domain, n in categories.items()))
    refusals = store.refusal_counts()
    if refusals:
        console.print(f"proposals refused: {sum(sum(ops.values()) for ops in refusals.values())} (" + "; ".join(
            f"{reason} {sum(ops.values())}" for reason, ops in refusals.items()) + ")", highlight=False)
    from evolvedirector.teachers.ledger import describe_spend

    console.print(f"teacher calls: {store.spend()[0]}, spend: {describe_spend(store)}", highlight=False)
    by_teacher = store.spend_by_teacher()
    possibly = any(row["possibly_billed"] for row in by_teacher)
    table = Table("teacher", "done", "pending", "failed", "spend $", *(["possibly billed $"] if possibly else []))
    for row in by_teacher:
        table.add_row(row["teacher"], str(row["done"]), str(row["pending"]), str(row["failed"]),
                      f"{row['dollars']:.2f}", *([f"{row['possibly_billed']:.2f}"] if possibly else []))
    console.print(table)
    faults = store.fault_counts()
    if faults:
        console.print("teacher faults (each handled, retried where safe): " + "; ".join(
            f"{teacher} " + ", ".join(f"{kind} {n}" for kind, n in kinds.items()) for teacher, kinds in faults.items()
        ))
    director_failures = store.director_failures()
    if director_failures:
        from evolvedirector.director.failures import describe_kinds

        total = sum(sum(kinds.values()) for kinds in director_failures.values())
        console.print(f"director calls with no usable answer: {total} (" + "; ".join(
            f"round {r}: {describe_kinds(kinds)}" for r, kinds in director_failures.items()) + ")", highlight=False)
    if last and last["metrics"].get("accuracy"):
        accuracy = last["metrics"]["accuracy"]
        console.print("held-out accuracy (last round): " + ", ".join(f"{k} {v:.2f}" for k, v in accuracy.items()))
    if last and last["metrics"].get("director_heldout"):
        from evolvedirector.loop.console import describe_judged

        judged = last["metrics"]["director_heldout"]
        categories = tuple(c for c in judged["categories"] if c != "mean")
        console.print(f"round {last['round']}: " + describe_judged(judged, categories), highlight=False, soft_wrap=True)


def _latest_student(run_dir: Path):
    """The run's student with its latest checkpoint's weights, and that checkpoint's round row."""
    from evolvedirector.loop.run_folder import RunFolder
    from evolvedirector.student.latest import NoStudentYet, load_latest_student

    store = _open_store(run_dir)
    try:
        student, row = load_latest_student(run_dir, RunFolder(run_dir).load_config(), store)
    except (ConfigError, NoStudentYet) as error:
        _fail(str(error))
    return student, row


@app.command()
def sample(
    run_dir: Path = typer.Argument(..., help="a run folder, or a folder written by `evolvedirector export`"),
    prompts: Path = typer.Option(..., "--prompts", help="text file, one prompt per line"),
    out: Path = typer.Option(..., "--out", help="folder for 00000.png, 00001.png, ... in line order"),
    seed: int = typer.Option(0, "--seed", help="noise seed; the same seed gives the same images"),
    steps: int | None = typer.Option(None, "--steps", help="DPM-Solver steps (default: the run's sample_steps)"),
    guidance: float | None = typer.Option(None, "--guidance", help="classifier-free guidance (default: the run's)"),
    height: int | None = typer.Option(None, "--height", min=1, help="pixels (default: the student's image size)"),
    width: int | None = typer.Option(None, "--width", min=1, help="pixels (default: the student's image size)"),
) -> None:
    """Draw one image per prompt with the run's latest student (EMA weights) or an exported one.

    An exported folder draws the same images as the run it came from, for the same seed."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not prompts.is_file():
        _fail(f"prompts file {prompts} does not exist")
    lines = prompts.read_text().splitlines()
    if not lines:
        _fail(f"prompts file {prompts} is empty")

    import torch

    from evolvedirector.store import write_atomic
    from evolvedirector.store.images import png_bytes

    try:
        if (Path(run_dir) / "model_index.json").is_file():
            from evolvedirector.student.pipeline import load_export

            pipe, source = load_export(run_dir), "exported student"
            generator = torch.Generator().manual_seed(seed)
            images = []
            for start in range(0, len(lines), 64):  # the batches Student.generate draws, so the same noise
                images += pipe(lines[start : start + 64], num_inference_steps=steps, guidance_scale=guidance,
                               height=height, width=width, generator=generator, output_type="np").images
        else:
            student, row = _latest_student(run_dir)
            source = row["checkpoint"]
            images = student.generate(lines, seed=seed, steps=steps, guidance=guidance, height=height, width=width)
    except ValueError as error:
        _fail(str(error))
    out.mkdir(parents=True, exist_ok=True)
    for index, image in enumerate(images):
        write_atomic(out / f"{index:05d}.png", png_bytes(image))
    console.print(f"wrote {len(images)} images to {out} ({source}, seed {seed})")


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    out: Path = typer.Option(..., "--out", help="folder to write; must not exist yet (or be empty)"),
) -> None:
    """Write the run's latest student (EMA weights) as a folder that diffusers loads.

    DiffusionPipeline.from_pretrained(OUT, trust_remote_code=True) loads it where evolvedirector
    is installed (its pipeline.py imports the pipeline class from the package); then
    pipe("a red circle on the left", num_inference_steps=20).images[0] is a PIL image.
    `evolvedirector sample OUT ...` reads it without running any file from it. Its README.md is
    the model card: base weights, teachers, director, data, steps, the run's evaluation, and the
    license to fill in."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evolvedirector.publish.cards import model_card
    from evolvedirector.publish.facts import RunFacts
    from evolvedirector.store.folders import refuse_to_overwrite
    from evolvedirector.student.export import export_student
    from evolvedirector.student.transformer import count_parameters

    try:
        refuse_to_overwrite(out)
    except FileExistsError as error:
        _fail(str(error))
    student, row = _latest_student(run_dir)
    store = _open_store(run_dir)
    try:
        facts = RunFacts.read(run_dir, store, row["round"])
    finally:
        store.close()
    export_student(student, out, card=model_card(facts, parameters=count_parameters(student.ema_model)))
    console.print(f"exported {row['checkpoint']} of {run_dir} to {out}")


@app.command("export-dataset")
def export_dataset_command(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    out: Path = typer.Option(..., "--out", help="folder to write; must not exist yet (or be empty)"),
    at_round: int | None = typer.Option(None, "--round", help="the set of this committed round (default: the last)"),
    with_deleted: bool = typer.Option(
        False, "--with-deleted", help="also the samples deleted by that round, marked by their round_deleted"
    ),
) -> None:
    """Write the curated set of a round as a Hugging Face imagefolder: the teacher images,
    metadata.jsonl (prompt, category, teacher, the teachers it was chosen among, rounds added and
    deleted, operation, parent prompt, the director's verdicts) and the dataset card, README.md.

    datasets.load_dataset("imagefolder", data_dir=OUT) loads it as it is."""
    from evolvedirector.publish.dataset import DatasetExportError, export_dataset
    from evolvedirector.publish.facts import NotCommitted
    from evolvedirector.store.folders import refuse_to_overwrite

    _open_store(run_dir).close()  # a clear error for a folder that is not a run
    try:
        refuse_to_overwrite(out)
        exported = export_dataset(run_dir, out, at_round=at_round, with_deleted=with_deleted)
    except (FileExistsError, NotCommitted, ConfigError, DatasetExportError) as error:
        _fail(str(error))
    deleted = f" and {exported.deleted} deleted by then" if with_deleted else ""
    console.print(f"wrote the set of round {exported.at_round} of {run_dir} to {out}: {exported.active} images"
                  f"{deleted}, metadata.jsonl and README.md", highlight=False)


@app.command("convert-pth")
def convert_pth(
    checkpoint: Path = typer.Argument(..., help="an original PixArt-α / EvolveDirector .pth ({'state_dict': ...})"),
    out: Path = typer.Option(..., "--out", help="folder for the diffusers transformer (a student.init_from)"),
    size: str = typer.Option("XL/2", "--size", help="its size in evolvedirector.student.SIZES (gives the heads)"),
    image_size: int | None = typer.Option(
        None, "--image-size", min=64, help="pixels it was trained at, 512 or 1024 (default: read from its pos_embed)"
    ),
    ema: bool = typer.Option(True, "--ema/--no-ema", help="take state_dict_ema when the file has it"),
) -> None:
    """Convert an original-layout PixArt-α checkpoint into a diffusers folder with QK LayerNorm.

    The file is read with weights_only=True: one that holds Python objects is refused."""
    from evolvedirector.student.convert import read_checkpoint, transformer_from_official
    from evolvedirector.student.sizes import get_size
    from evolvedirector.student.transformer import count_parameters

    try:
        state = read_checkpoint(checkpoint, ema=ema)
        # The SD VAE makes the latent side an eighth of the image side.
        model = transformer_from_official(state, get_size(size), image_size // 8 if image_size else None)
    except (ValueError, KeyError, FileNotFoundError) as error:
        _fail(str(error))
    model.save_pretrained(out)
    console.print(f"wrote {out} ({count_parameters(model) / 1e6:.1f}M parameters)")


@app.command("eval")
def eval_command(
    run_dir: Path = typer.Argument(..., help="a run folder"),
    prompts: str = typer.Option(
        "heldout", "--prompts", help="heldout (the run's held-out prompts), train (its active set) or a FILE"
    ),
    limit: int | None = typer.Option(None, "--limit", min=2, help="at most this many prompts, drawn at random"),
    seed: int = typer.Option(0, "--seed", help="student noise, prompt draw, director coin and bootstrap"),
    one_order: bool = typer.Option(
        False, "--one-order", help="judge each pair once in random order (no ties) instead of in both orders"
    ),
    resamples: int = typer.Option(1000, "--resamples", min=1, help="bootstrap resamples for the intervals"),
    inception: Path | None = typer.Option(
        None, "--inception", help="TorchScript Inception-v3 FID network (inception-2015-12-05.pt): adds FID proper"
    ),
    max_calls: int | None = typer.Option(None, "--max-calls", min=0, help="most new teacher calls to make"),
    max_dollars: float | None = typer.Option(None, "--max-dollars", min=0, help="most new teacher spend ($)"),
) -> None:
    """The run's latest student against each teacher, per domain: director win / tie / lose rates
    with bootstrap intervals, held-out accuracy (shapes world), teacher selection rates, Fréchet
    distances. Teacher images come through the run's ledger: one already paid for is reused.
    Writes RUN_DIR/eval/eval.json and rebuilds RUN_DIR/report.html."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from evolvedirector.evaluation.evaluate import EvalError, EvalOptions, run_eval
    from evolvedirector.evaluation.frechet import InceptionUnavailable

    _open_store(run_dir).close()  # a clear error for a folder that is not a run
    options = EvalOptions(
        prompt_set=prompts, limit=limit, seed=seed, both_orders=not one_order, resamples=resamples,
        inception=inception, max_new_calls=max_calls, max_new_dollars=max_dollars,
    )
    try:
        with RunLock(run_dir):  # it buys through the run's ledger: no loop may take its calls for a crash's
            run_eval(run_dir, options, console=console)
    except (EvalError, InceptionUnavailable, ConfigError, RunFolderError) as error:
        _fail(str(error))


@app.command("ab")
def ab_command(
    run_dir: Path = typer.Argument(..., help="a run folder with an evaluation (evolvedirector eval)"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to listen on (others on the network need the token)"),
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="port; 0 picks a free one"),
) -> None:
    """Serve the blind A/B page: people pick the better of the student's and a teacher's image
    (← / → / space for a tie / s to skip). Votes go into the run's store and the report."""
    from evolvedirector.evaluation.ab_server import AbError, bind, create_app, make_server, new_token

    _open_store(run_dir).close()
    token = new_token()
    try:
        app_ = create_app(run_dir, token)
        sock = bind(host, port)
    except AbError as error:
        _fail(str(error))
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]note:[/yellow] listening on {host}: anyone who can reach it and has the address "
                      "below can vote")
    shown_host = f"[{host}]" if ":" in host else host
    # The only place the token is ever shown: it is not logged or written anywhere.
    console.print(f"open http://{shown_host}:{sock.getsockname()[1]}/?token={token}  (Ctrl-C stops)", highlight=False)
    try:
        make_server(app_).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn shuts down gracefully, then passes Ctrl-C on: a normal stop
        pass
    console.print(f"stopped; votes are in {Path(run_dir) / 'report.html'}")


if __name__ == "__main__":
    main()
