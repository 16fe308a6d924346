# Everything installs into .venv with pip (pip takes torch from this machine's local files).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test test-all bench lint clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip 2>&1 | grep -v "is ignored" || true
	$(BIN)/python -m pip install --quiet -e '.[test]' 2>&1 | grep -v -e "is ignored" -e "^ *$$" || true
	$(BIN)/python -c "import erasekit, diffusers, accelerate, open_clip, nudenet"
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/erasekit demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m ""

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_mask_memory.py
	$(BIN)/python benchmarks/bench_demo.py
	$(BIN)/python benchmarks/bench_eval_throughput.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) outputs
