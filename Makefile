# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rftlab-installed

.PHONY: demo study test lint bench bench-smollm2 clean

# torch goes in first and pinned: a looser requirement would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/rftlab demo --out runs/demo

study: $(STAMP)
	$(BIN)/rftlab study studies/quick.yaml

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_reject.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_sample_peers.py
	$(BIN)/python benchmarks/bench_toy_sft.py
	$(BIN)/python benchmarks/bench_decoder_check.py

# A real model (SmolLM2-135M, cached GGUF) on 100 GSM8K test + 50x4 train problems, verdicts checked by
# math-verify: 7 minutes on 2 idle cores (1 thread is faster on a busy machine); not in `make bench` or `make test`.
bench-smollm2: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[bench]'
	$(BIN)/python benchmarks/bench_smollm2.py --threads 2 --out runs/bench-smollm2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
