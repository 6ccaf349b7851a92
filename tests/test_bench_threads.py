"""`bench threads` prints a step's seconds per thread count, idle and beside a busy program."""

import re

from typer.testing import CliRunner

from evolvedirector.cli import app


def test_bench_threads_prints_each_load_and_the_slowdown_last():
    result = CliRunner().invoke(app, ["bench", "threads", "--size", "tiny", "--batch-size", "4", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("bench threads: tiny at batch 4, ")
    rows = {line.split()[0]: line for line in lines if line.startswith(("idle ", "1 busy"))}
    assert set(rows) == {"idle", "1"}
    for row in rows.values():
        assert re.search(r"(\s\d+\.\d{3})+\s+\d+$", row), row  # seconds per count, then the count chosen
    match = re.fullmatch(r"idle=(\S+) busy=(\S+) slowdown=(\S+) cores_taken=(\S+)", lines[-1])
    assert match, lines[-1]
    idle, busy, slowdown, taken = map(float, match.groups())
    assert idle > 0 and busy > 0 and abs(slowdown - busy / idle) < 0.01 * slowdown and 0 < taken <= 1
