# glmlab: `make demo` and `make test` set everything up on a fresh machine with Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test-deps demo test lab bench quality engines clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Debian's chromium (+ a CJK font) for the browser tests and Go for the Ollama template test; needs root or sudo.
test-deps: install
	scripts/install-test-deps.sh || echo "test-deps: could not install chromium or Go; the tests that drive them will be skipped"

demo: install
	$(BIN)/glmlab demo

test: install test-deps
	$(BIN)/python -m pytest -q

lab: install
	$(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) notebooks

bench: install
	cd eval/bench && for b in overhead prefix_cache batching server serving training; do \
		echo "== $$b"; ../../$(BIN)/python $$b.py || exit 1; done
	cd eval/bench && ../../$(BIN)/python gpu.py

# ruff (lint + format) and the import contracts of pyproject.toml (layers, no cycles, scoring without models)
quality: install
	$(BIN)/ruff check glmlab tests eval engines
	$(BIN)/ruff format --check glmlab tests eval engines
	$(BIN)/lint-imports

# The hand-offs to vLLM and llama.cpp checked by the engines' own code (README, "Real engines"): builds their
# side environments under .engines/ once (~10 GB), then runs engines/check.py. Not part of `make test`.
engines: install
	engines/setup.sh
	$(BIN)/python engines/check.py

clean:
	rm -rf $(VENV) .pytest_cache
