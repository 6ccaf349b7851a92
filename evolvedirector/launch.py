"""Train a run's student on its dynamic set, on one process or many:

    accelerate launch [accelerate's flags: --multi_gpu, --use_fsdp --fsdp_version 2, --num_machines ...] \\
        -m evolvedirector.launch RUN_DIR --steps N

The set is read from RUN_DIR's store (by the main process only; the others receive it) at chunk
boundaries, every `train.steps_per_round` steps: chunk k trains on version min(k, last committed
round). On a finished run that retraces the set's history as the loop trained on it; beside a
live loop it follows the newest committed version. After every chunk the main process writes a
checkpoint into RUN_DIR/trainer/ and points `latest` at it; the same command run again resumes
there, with the same batches, noise and set versions as an uninterrupted run. With `log_with` in
the run's config, each step's loss and learning rate go to the trackers as a run of their own
(TensorBoard: RUN_DIR/logs/PROJECT-trainer/).

`--follow` trains beside a live loop instead (its asynchronous rounds, `evolve.overlap: async`):
always on the newest committed version, switching at the first step boundary after a round
commits. Before each step the main process asks the store and broadcasts the answer (one small
collective per step), so every process switches at the same step. Checkpoints stay at chunk
boundaries; a resume goes on from the last one, on the newest version, so the steps at which it
switches follow the loop's timing, not the interrupted run's.

The main process holds the checkpoint folder's lock (`OUT/.lock`, as a run folder's) while it
trains: a second launch on the same folder is refused, naming the holder.

A command like cli.py, and beside it: it puts the trainer together with the loop's run lock and
trackers, which the trainer itself never imports (the loop is the layer above it).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evolvedirector.launch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="a run folder (config.yaml, evolve.db, images/)")
    parser.add_argument("--steps", type=int, required=True, help="train until this global step")
    parser.add_argument("--out", type=Path, default=None, help="checkpoint folder (default RUN_DIR/trainer)")
    parser.add_argument("--chunk", type=int, default=None,
                        help="steps per set version and checkpoint (default train.steps_per_round)")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="leave after this many steps of this invocation (at a checkpoint); run again to resume")
    parser.add_argument("--follow", action="store_true",
                        help="train on the newest committed version, switching as soon as a round commits")
    parser.add_argument("--batch-log", type=Path, default=None,
                        help="append each step's (version, rank, sample ids) to DIR/batches-rank<R>.jsonl")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never download weights at run time

    import torch

    from evolvedirector.config import load_config
    from evolvedirector.loop import tracking
    from evolvedirector.loop.run_lock import RunFolderInUse, RunLock
    from evolvedirector.store import ImageStore, Store
    from evolvedirector.student import Student
    from evolvedirector.trainer import checkpoint
    from evolvedirector.trainer.trainer import Trainer

    run_dir = args.run_dir
    if not (run_dir / "evolve.db").is_file() or not (run_dir / "config.yaml").is_file():
        parser.error(f"{run_dir} is not a run folder (it needs config.yaml and evolve.db)")
    config = load_config(run_dir / "config.yaml", overrides={"out": str(run_dir)})
    chunk = args.chunk or config.train.steps_per_round
    if chunk < 1 or args.steps < 0:
        parser.error("--chunk must be >= 1 and --steps >= 0")
    out = args.out or run_dir / "trainer"
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # the same initial student on every process
    student = Student(config.student, config.world.image_size)
    try:
        tracking.check_installed(config.log_with)
    except tracking.TrackerUnavailable as error:
        raise SystemExit(f"error: {error}") from None
    trainer = Trainer(student, config.train, seed=config.seed, device=config.device,
                      cache_dir=run_dir / "features", images=ImageStore(run_dir / "images"),
                      log_with=config.log_with, logging_dir=run_dir / tracking.LOGS)
    lock = None
    if trainer.is_main:  # before anything in `out` is read or written; the kernel drops it if we die
        try:
            lock = RunLock(out).acquire()
        except RunFolderInUse as error:
            raise SystemExit(f"error: {error}") from None
    if args.batch_log is not None:
        trainer.batch_log = []
    store = Store(run_dir / "evolve.db") if trainer.is_main else None  # one reader; the rest are told
    if checkpoint.resume(trainer, out) and trainer.is_main:
        print(f"resumed from {out / 'latest'}: step {trainer.step}", flush=True)
    if config.log_with:
        # A run of its own beside the loop's (it retraces the set's history from step 0): loss and
        # learning rate per step, the main process logging.
        tracking.start(trainer.accelerator, config, f"{config.log_project or run_dir.name}-trainer", trainer.step)

    started = trainer.step
    while trainer.step < args.steps:
        if args.stop_after is not None and trainer.step - started >= args.stop_after:
            break
        # A chunk ends at the next multiple of `chunk`, so a resumed run realigns with the schedule.
        steps = min(chunk - trainer.step % chunk, args.steps - trainer.step)
        version, samples = None, []
        if store is not None:
            last = store.last_round()
            if last is None:
                raise SystemExit(f"error: {run_dir} has no committed round yet (no set to train on)")
            version = last if args.follow else min(trainer.step // chunk, last)
            samples = store.active_samples(at_round=version)

        def newer() -> bool:  # asked on the main process only; its answer is broadcast
            return store.last_round() != version

        loss = trainer.train_on_samples(samples, steps, version=version, until=newer if args.follow else None)
        if trainer.step % chunk and trainer.step < args.steps:
            continue  # left mid-chunk for a newer version; the checkpoint waits for the chunk's end
        checkpoint.save_checkpoint(trainer, out)
        if trainer.is_main:
            print(f"step {trainer.step} | set version {trainer.version} | loss {loss:.4f}", flush=True)

    if trainer.batch_log is not None:
        args.batch_log.mkdir(parents=True, exist_ok=True)
        with open(args.batch_log / f"batches-rank{trainer.rank}.jsonl", "a") as log:
            log.writelines(json.dumps(entry) + "\n" for entry in trainer.batch_log)
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    if lock is not None:
        lock.release()


if __name__ == "__main__":
    main()
