# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rftlab-installed

.PHONY: demo test lint bench clean

# torch goes in first and pinned: a looser requirement would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

# Until `rftlab demo` exists (toy world, training and sampling come first), say what it will do.
demo: $(STAMP)
	@echo "rftlab demo will run the whole RFT loop on the built-in toy world, on the CPU:"
	@echo "  generate GSM-style problems -> pre-train a tiny base model -> SFT -> sample k paths per question"
	@echo "  -> reject (correct, checked, distinct paths) -> RFT from the base -> evaluate SFT and RFT -> report.md"
	@echo "Available now: rftlab reject (see README.md). $$($(BIN)/rftlab --version)"

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reject.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
