# Set-up is part of every target: on a fresh machine `make demo` and `make test` need nothing but
# python3 (3.10+) and make. torch is installed first, pinned, because an unpinned torch pulled in
# by another package brings several GB of CUDA libraries.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test gpu-check setup browser clean

demo: $(VENV)/.installed
	$(BIN)/evolvedirector demo --out runs/demo

# Any pytest failure fails the target, including exit code 5 (no tests collected). One worker per
# core (pytest-xdist): much of the suite waits on subprocesses, servers and kills, so on 2 cores
# it took 238 s against 366 s in one process (AVX-512, idle).
test: $(VENV)/.installed browser
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -n auto

# On a machine with an NVIDIA GPU, its own PyTorch and no network (README, On a GPU): the GPU
# tests, the demo on CUDA and the training bench, then one summary table. Never the .venv above,
# whose torch is the CPU pin; the packages the machine lacks come as wheels in WHEELS.
WHEELS ?= .whl
gpu-check:
	$(PYTHON) evolvedirector/bench/gpu_check.py --wheels $(WHEELS)

# The blind A/B page is tested in a real browser: Debian's chromium, driven by Playwright (which
# must never download browsers of its own). Installed here when missing and when it can be (root
# with apt-get); otherwise, or if the install fails, the browser test skips and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the A/B page's browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: chromium could not be installed; the browser test will be skipped"; \
	  else \
	    echo "note: chromium is missing (install it with: apt-get install -y chromium); the browser test will be skipped"; \
	  fi; }

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) runs
