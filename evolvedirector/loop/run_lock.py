"""One process writes a run folder at a time.

`RUN_DIR/.lock` is held with `flock` for as long as a writer lives: `run` and `demo` (the loop,
which settles pending teacher calls and replaces checkpoints) and `eval` (which buys teacher
images through the same ledger). A second writer is refused, with the holder's pid, host,
command and start time, which the holder writes into the file. The kernel drops the lock when
its process dies, `kill -9` included, so a stale lock needs no cleanup: the next writer takes it
and overwrites the holder's line. Readers (`status`, `sample`, `export`, `ab`, whose votes are
short transactions beside the loop's) take no lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from evolvedirector.loop.run_folder import RunFolderError

LOCK_FILE = ".lock"


class RunFolderInUse(RunFolderError):
    """Another live process holds the run folder."""


class RunLock:
    """`with RunLock(path):` or `lock = RunLock(path).acquire()` ... `lock.release()`."""

    def __init__(self, folder: Path, command: str | None = None):
        self.folder = Path(folder)
        self.command = command or _this_command()
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        path = self.folder / LOCK_FILE
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise RunFolderError(f"cannot write to the run folder {self.folder}: {error.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.read(fd, 4096))
            os.close(fd)
            raise RunFolderInUse(f"{self.folder} is in use by {holder}; wait for it to finish or stop it") from None
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
                  "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __del__(self) -> None:  # a writer that failed before it could release
        self.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _this_command() -> str:
    program = Path(sys.argv[0]).name
    if program == "cli.py":  # python -m evolvedirector.cli
        program = "evolvedirector"
    return " ".join([program, *sys.argv[1:]])


def _describe(raw: bytes) -> str:
    try:
        holder = json.loads(raw)
        return f"pid {holder['pid']} on {holder['host']} ({holder['command']}, started {holder['started']})"
    except (ValueError, KeyError, TypeError):  # the holder has not written its line yet
        return "another process"
