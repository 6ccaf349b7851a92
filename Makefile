# Set-up is part of every target: on a fresh machine `make demo` and `make test` need nothing but
# python3 (3.10+) and make. torch is installed first, pinned, because an unpinned torch pulled in
# by another package brings several GB of CUDA libraries.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0

.PHONY: demo test setup clean

demo: $(VENV)/.installed
	$(BIN)/evolvedirector demo --out runs/demo

# Any pytest failure fails the target, including exit code 5 (no tests collected).
test: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

clean:
	rm -rf $(VENV) runs
