# Two commands on a fresh machine: `make demo` (the main job) and `make test` (the test suite).
# Each creates .venv with the pinned dependencies the first time.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,notebooks]'
	touch $@

demo: $(VENV)/.installed
	$(BIN)/milesbook compare --dataset digits-av --seeds 3 --out runs/demo

test: $(VENV)/.installed
	MPLBACKEND=Agg TQDM_DISABLE=1 $(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs
