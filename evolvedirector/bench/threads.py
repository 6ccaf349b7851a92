"""`evolvedirector bench threads`: a training step alone and beside busy programs, per thread count.

The loop chooses its CPU threads before each round (loop/threads.py); this shows why and what it
gains. For each load (idle, then 1 .. --busy programs that spin on a core each) it times the demo
student's step with each candidate thread count and the count the loop would choose. Each
configuration's step runs in this process under the OpenMP wait policy the CLI set (GOMP_SPINCOUNT
unless you exported one). The last line is `idle=<s> busy=<s> slowdown=<x> cores_taken=<share>`
for the loop's choice beside one busy program: at most proportional means slowdown <= 1 / (1 -
cores_taken).
"""

from __future__ import annotations

import multiprocessing
import os
import time

import typer

from evolvedirector.bench import bench_app


def spin() -> None:
    while True:
        pass


@bench_app.command("threads")
def threads_bench(
    size: str = typer.Option("shapes-xxs", "--size", help="the student size (the demo's by default)"),
    batch_size: int = typer.Option(32, "--batch-size", min=1),
    repeats: int = typer.Option(10, "--repeats", min=1, help="timed steps per configuration (after one warm-up)"),
    busy: int = typer.Option(1, "--busy", min=0, help="the most busy programs to run beside the step"),
) -> None:
    """A training step's seconds per thread count, idle and beside busy programs."""
    import torch

    from evolvedirector.bench.train import RandomCaptions
    from evolvedirector.config import StudentConfig, TrainConfig
    from evolvedirector.loop.threads import candidates, choose_threads
    from evolvedirector.student import Student
    from evolvedirector.trainer import Trainer

    available = torch.get_num_threads()
    counts = candidates(available)
    torch.manual_seed(0)
    student = Student(StudentConfig(size=size), 32, text_encoder=RandomCaptions(16, 384))
    trainer = Trainer(student, TrainConfig(batch_size=batch_size), device="cpu")
    policy = os.environ.get("OMP_WAIT_POLICY") and f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    policy = policy or f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', '(OpenMP default)')}"
    print(f"bench threads: {size} at batch {batch_size}, {os.cpu_count()} cores, torch threads {available}, {policy}")
    print(f"{'load':<16} " + " ".join(f"{f'{n} thread' + ('s' if n > 1 else ''):>10}" for n in counts)
          + f" {'chosen':>8}")
    chosen_at: dict[int, float] = {}
    for load in range(busy + 1):
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(load)]
        for process in spinners:
            process.start()
        try:
            time.sleep(0.5 if load else 0)  # let the scheduler place them
            best, seconds = choose_threads(trainer, available, repeats, at_least=0.0)  # what the loop does
        finally:
            for process in spinners:
                process.terminate()
                process.join()
        chosen_at[load] = seconds[best]
        label = "idle" if load == 0 else f"{load} busy program" + ("s" if load > 1 else "")
        print(f"{label:<16} " + " ".join(f"{seconds[n]:>10.3f}" for n in counts) + f" {best:>8}")
    torch.set_num_threads(available)
    if busy:
        taken = 1 / (os.cpu_count() or 1)
        slowdown = chosen_at[1] / chosen_at[0]
        print(f"beside one busy program the loop's choice is {slowdown:.2f}x slower than idle; proportional to the "
              f"cores it takes would be {1 / (1 - taken):.2f}x" if taken < 1 else "")
        print(f"idle={chosen_at[0]:.4g} busy={chosen_at[1]:.4g} slowdown={slowdown:.3g} cores_taken={taken:.3g}")
