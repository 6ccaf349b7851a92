"""`make gpu-check`: every path on CUDA, checked with one command on a machine with an NVIDIA GPU.

Such a machine has its own PyTorch (never the CPU build that `make test` pins), often no network,
and lacks some of this project's packages: their wheels are carried in a folder (README, On a
GPU). The check installs them into a folder of its own, never beside the machine's packages, puts
that folder and this repository on PYTHONPATH (the project itself is not installed), and runs,
each under its own time limit:

  tests          the GPU-marked tests (tests/gpu)
  demo           the shapes-world demo on CUDA for 3 rounds
  bench eager    `bench train` of the XL/2 student at 512 px, bf16, batch 32
  bench compile  the same with --compile

It ends with one table (step, status, seconds, the step's key figure) and exits 1 if any step
failed. Without a GPU it says so in one line and exits 0.

It imports only the standard library, so that it can say "no GPU" where torch or the wheels are
missing, and is run by path (`python3 evolvedirector/bench/gpu_check.py`): importing the
package's `bench` would import typer, which may be one of the wheels still to install.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
SITE = Path(tempfile.gettempdir()) / "evolvedirector-site"  # the carried wheels, installed
NO_GPU = "gpu-check: no NVIDIA GPU visible to PyTorch here{why}; nothing to check (make test runs the CPU suite)"


@dataclass
class Step:
    name: str
    command: list[str]
    limit_s: int
    figure: Callable[[list[str]], str | None]  # the key figure, read from the step's output lines
    prepare: Callable[[], None] | None = None  # runs first; an exception fails the step


@dataclass
class Outcome:
    name: str
    status: str  # ok, skipped, failed (exit N), timed out (N s)
    seconds: float
    figure: str

    @property
    def ok(self) -> bool:
        return self.status in ("ok", "skipped")


# -- key figures, read from a step's output -------------------------------------------------------


def pytest_counts(lines: list[str]) -> str | None:
    """'12 passed, 1 skipped' from pytest's last line."""
    for line in reversed(lines):
        if found := re.search(r"(\d+ (?:passed|failed|errors?|skipped)\b.*?) in [\d.]+s", line):
            return found.group(1)
    return None


def last_round(lines: list[str]) -> str | None:
    """'round 3: held-out mean 0.08' from the demo's last round line."""
    for line in reversed(lines):
        if found := re.match(r"round\s+(\d+)\s*\|.*\bheld-out\b.*\bmean ([-\d.]+)", line):
            return f"round {found.group(1)}: held-out mean {found.group(2)}"
    return None


def bench_line(lines: list[str]) -> str | None:
    """`bench train`'s last line, 'images/s=<x> mfu=<y>'."""
    for line in reversed(lines):
        if found := re.search(r"images/s=\S+ mfu=\S+", line):
            return found.group(0)
    return None


# -- the steps -----------------------------------------------------------------------------------


def gpu_visible(python: str) -> tuple[bool, str]:
    """(whether PyTorch sees a GPU, why not). Asked in a child process: a missing or broken torch
    is no GPU, not a crash of the check."""
    probe = subprocess.run([python, "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True, timeout=300)
    if probe.returncode != 0:
        return False, f" ({Path(python).name} cannot import torch)"
    return probe.stdout.strip().endswith("True"), ""


def install_wheels(python: str, wheels: Path) -> Outcome:
    """The carried wheels into SITE, afresh: a package left from an earlier carry must not linger."""
    found = sorted(wheels.glob("*.whl"))
    if not found:
        return Outcome("wheels", "skipped", 0.0, f"no *.whl in {wheels}: the machine's own packages only")
    shutil.rmtree(SITE, ignore_errors=True)
    started = time.monotonic()
    done = subprocess.run([python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                           "--target", str(SITE), *map(str, found)], capture_output=True, text=True)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines() or ["(no output)"]
        return Outcome("wheels", f"failed (exit {done.returncode})", seconds, last[-1][:120])
    return Outcome("wheels", "ok", seconds, f"{len(found)} wheels into {SITE}")


def write_demo_config(path: Path, out: Path) -> None:
    """demo.yaml on CUDA for three rounds, without its TensorBoard logs (nothing in them is
    CUDA's, and the machine need not carry tensorboard's wheels)."""
    import yaml  # here: it may come from the wheels, installed after this module started

    config = yaml.safe_load((REPOSITORY / "evolvedirector" / "configs" / "demo.yaml").read_text())
    config.update(out=str(out), device="cuda", budget={"max_rounds": 3}, log_with=[])
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def gpu_steps(python: str, work: Path) -> list[Step]:
    """The checks, with time limits that add up to 470 s (measured on an H200: tests 126 s, demo 49 s,
    eager bench 45 s, compiled bench about 75 s)."""
    config = work / "demo.yaml"
    bench = [python, "-m", "evolvedirector.cli", "bench", "train", "--size", "XL/2", "--resolution", "512",
             "--precision", "bf16", "--batch-size", "32", "--device", "cuda"]
    # Only tests/gpu: collecting the whole suite would need its test-only packages (hypothesis ...).
    return [
        Step("tests", [python, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider", "tests/gpu"],
             200, pytest_counts),
        Step("demo", [python, "-m", "evolvedirector.cli", "run", str(config)], 90, last_round,
             prepare=lambda: write_demo_config(config, work / "demo")),
        Step("bench eager", bench, 60, bench_line),
        Step("bench compile", [*bench, "--compile"], 120, bench_line),
    ]


# -- running them --------------------------------------------------------------------------------


def echo(stream, lines: list[str], log) -> None:
    for line in stream:
        sys.stdout.write(line)
        sys.stdout.flush()
        log.write(line)
        lines.append(line.rstrip("\n"))


def stop(process: subprocess.Popen) -> None:
    """SIGTERM to the step's process group before SIGKILL: torchrun passes it on to its workers,
    which run in sessions of their own and would outlive a killed parent, holding the GPU."""
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=grace)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            pass


def run_step(step: Step, env: dict[str, str], logs: Path) -> Outcome:
    print(f"\n== {step.name} (limit {step.limit_s} s): {' '.join(step.command)}", flush=True)
    started = time.monotonic()
    try:
        if step.prepare is not None:
            step.prepare()
    except Exception as error:
        return Outcome(step.name, "failed", time.monotonic() - started, f"{type(error).__name__}: {error}"[:120])
    lines: list[str] = []
    with open(logs / f"{step.name.replace(' ', '-')}.log", "w") as log:
        process = subprocess.Popen(step.command, cwd=REPOSITORY, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, errors="replace",
                                   start_new_session=True)  # a group of its own, to stop it whole
        reader = threading.Thread(target=echo, args=(process.stdout, lines, log), daemon=True)
        reader.start()
        try:
            code = process.wait(timeout=step.limit_s)
            status = "ok" if code == 0 else f"failed (exit {code})"
        except subprocess.TimeoutExpired:
            stop(process)
            status = f"timed out ({step.limit_s} s)"
        reader.join(timeout=10)  # a straggler still holding the pipe must not hold the check
    seconds = time.monotonic() - started
    last = next((line for line in reversed(lines) if line.strip()), "(no output)")
    return Outcome(step.name, status, seconds, step.figure(lines) or last.strip()[:120])


def report(outcomes: list[Outcome]) -> int:
    """Print the summary table; the exit status: 1 if any step failed."""
    rows = [("step", "status", "seconds", "figure")]
    rows += [(o.name, o.status, f"{o.seconds:.0f}", o.figure) for o in outcomes]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    print("\ngpu-check summary")
    for name, status, seconds, figure in rows:
        print(f"{name:<{widths[0]}}  {status:<{widths[1]}}  {seconds:>{widths[2]}}  {figure}")
    return 0 if all(o.ok for o in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--wheels", type=Path, default=Path(".whl"), help="folder of the carried wheels")
    args = parser.parse_args(argv)
    python = sys.executable  # the machine's python3 with its PyTorch
    visible, why = gpu_visible(python)
    if not visible:
        print(NO_GPU.format(why=why))
        return 0

    wheels = install_wheels(python, args.wheels.resolve())
    paths = ([str(SITE)] if wheels.status == "ok" else []) + [str(REPOSITORY)]
    sys.path[:0] = paths  # what the steps see, for the demo's config
    work = Path(tempfile.mkdtemp(prefix="evolvedirector-gpu-check-"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [*paths, os.environ.get("PYTHONPATH")])),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",  # no network: never wait on a hub
           "PYTHONUNBUFFERED": "1"}  # lines as they come, for the echo and for a step that times out
    outcomes = [wheels, *(run_step(step, env, work) for step in gpu_steps(python, work))]
    status = report(outcomes)
    print(f"logs and the demo run: {work}")
    return status


if __name__ == "__main__":
    sys.exit(main())
