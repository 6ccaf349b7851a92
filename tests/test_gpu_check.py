"""`make gpu-check` on a machine without a GPU, and its step machinery with stand-in steps."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from evolvedirector.bench import gpu_check
from evolvedirector.bench.gpu_check import Outcome, Step, bench_line, last_round, pytest_counts, report, run_step

REPOSITORY = Path(__file__).resolve().parents[1]
SCRIPT = REPOSITORY / "evolvedirector" / "bench" / "gpu_check.py"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run whole")
def test_without_a_gpu_it_says_so_in_one_line_and_exits_0():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=REPOSITORY)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [gpu_check.NO_GPU.format(why="")]


@pytest.fixture
def no_torch(tmp_path):
    """An environment whose python cannot import torch, as on a machine without PyTorch."""
    (tmp_path / "torch.py").write_text("raise ImportError('no torch on this machine')\n")
    return {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)}


def test_a_python_without_torch_counts_as_no_gpu(no_torch):
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, cwd=REPOSITORY, env=no_torch)
    assert done.returncode == 0, done.stderr
    why = f" ({Path(sys.executable).name} cannot import torch)"
    assert done.stdout.splitlines() == [gpu_check.NO_GPU.format(why=why)]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_make_target_runs_the_check_with_the_python_it_is_given(no_torch):
    done = subprocess.run(["make", "-s", "gpu-check", f"PYTHON={sys.executable}"], capture_output=True, text=True,
                          cwd=REPOSITORY, env=no_torch)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu-check: no NVIDIA GPU visible to PyTorch here")


def python_step(name: str, code: str, figure=bench_line, limit_s: int = 60, prepare=None) -> Step:
    return Step(name, [sys.executable, "-c", code], limit_s, figure, prepare)


def test_steps_are_timed_read_for_their_figure_and_summed_up(tmp_path, capsys):
    def refuse():
        raise ModuleNotFoundError("No module named 'yaml'")

    steps = [
        python_step("fine", "print('warming up'); print('images/s=41.5 mfu=0.37')"),
        python_step("broken", "import sys; print('Traceback: CUDA out of memory'); sys.exit(3)"),
        python_step("slow", "import time; print('started', flush=True); time.sleep(60)", limit_s=1),
        python_step("unprepared", "print('never runs')", prepare=refuse),
    ]
    outcomes = [run_step(step, {"PATH": "/usr/bin:/bin"}, tmp_path) for step in steps]
    assert [(o.status, o.figure) for o in outcomes] == [
        ("ok", "images/s=41.5 mfu=0.37"),
        ("failed (exit 3)", "Traceback: CUDA out of memory"),  # no figure: the last line says why
        ("timed out (1 s)", "started"),
        ("failed", "ModuleNotFoundError: No module named 'yaml'"),
    ]
    assert outcomes[2].seconds < 30
    assert (tmp_path / "fine.log").read_text() == "warming up\nimages/s=41.5 mfu=0.37\n"
    assert "images/s=41.5 mfu=0.37" in capsys.readouterr().out  # echoed as it ran

    assert report(outcomes) == 1
    table = capsys.readouterr().out.splitlines()
    assert table[-5].split() == ["step", "status", "seconds", "figure"]
    assert table[-4].split()[:2] == ["fine", "ok"] and table[-4].endswith("images/s=41.5 mfu=0.37")
    assert report([outcomes[0], Outcome("wheels", "skipped", 0.0, "no *.whl in .whl")]) == 0


def test_the_figures_are_read_from_the_real_outputs():
    assert pytest_counts(["....s", "SKIPPED [1] tests/gpu/x.py:9: needs an NVIDIA GPU",
                          "14 passed, 1 skipped, 20 deselected in 151.02s (0:02:31)"]) == \
        "14 passed, 1 skipped, 20 deselected"
    assert pytest_counts(["1 failed, 13 passed in 9.30s"]) == "1 failed, 13 passed"
    rounds = [
        "round   2 | set  219 | teacher-win 0.74 | +41 -11 (mutated 1, refused 8) | calls 670 $29.00 | held-out "
        "object 0.25 relation 0.00 count 0.04 text 0.00 mean 0.07 | 12s",
        "round   3 | set  231 | teacher-win 0.71 | +42 -12 (mutated 1, refused 9) | calls 711 $30.87 | held-out "
        "object 0.25 relation 0.00 count 0.08 text 0.00 mean 0.08 | 11s",
        "stopped: max_rounds=3 reached. Run folder: /tmp/x/demo",
    ]
    assert last_round(rounds) == "round 3: held-out mean 0.08"
    assert bench_line(["peak: 989 TFLOP/s", "images/s=152.3 mfu=0.4121"]) == "images/s=152.3 mfu=0.4121"
    assert bench_line(["RuntimeError: CUDA out of memory"]) is None


def test_the_demo_config_is_the_demo_on_cuda_for_three_rounds(tmp_path):
    from evolvedirector.config import demo_config_path, load_config

    gpu_check.write_demo_config(tmp_path / "demo.yaml", tmp_path / "demo")
    config, demo = load_config(tmp_path / "demo.yaml"), load_config(demo_config_path())
    assert (config.device, config.out, config.budget.max_rounds, config.budget.max_minutes) == \
        ("cuda", tmp_path / "demo", 3, None)
    assert config.log_with == [] and demo.log_with == ["tensorboard"]
    changed = {"device", "out", "budget", "log_with"}
    assert config.model_dump(exclude=changed) == demo.model_dump(exclude=changed)
