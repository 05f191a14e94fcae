# The project's own set-up: a fresh machine needs nothing but this file.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: 2.13.0 is the CPU build on local disk; an unpinned torch would pull a CUDA build
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/sdbake run recipes/demo.toml --out outputs
	@echo "The demo's images are in outputs/demo/ (run again: every stage is a cache hit)."

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .sdbake outputs
