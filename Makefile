# The project's own set-up: a fresh machine needs nothing but this file.
#   make install              torch 2.13.0 from your pip index (here: the CPU build on local disk)
#   make install TORCH=cpu    the CPU build from PyTorch's CPU index (no CUDA libraries)
#   make install TORCH=cu130  the CUDA 13.0 build from PyTorch's cu130 index
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH ?= default
TORCH_VERSION := 2.13.0
TORCH_STAMP := $(VENV)/.torch-$(TORCH)

ifeq ($(TORCH),default)
TORCH_PIP := torch==$(TORCH_VERSION)
else ifeq ($(TORCH),cpu)
TORCH_PIP := torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cpu
else ifeq ($(TORCH),cu130)
TORCH_PIP := torch==$(TORCH_VERSION) --index-url https://download.pytorch.org/whl/cu130
else
$(error TORCH=$(TORCH): use TORCH=cpu, TORCH=cu130, or leave it unset)
endif

.PHONY: install test test-fast browser demo lint clean

install: $(STAMP)

# torch first, from the chosen index: installing sdbake with no torch present would pull whatever
# build the default index has. pip keeps an installed torch==2.13.0 of another build, so switching
# TORCH= removes the old one first.
$(TORCH_STAMP):
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if ls $(VENV)/.torch-* >/dev/null 2>&1; then $(BIN)/python -m pip uninstall -q -y torch; rm -f $(VENV)/.torch-*; fi
	$(BIN)/python -m pip install -q $(TORCH_PIP)
	touch $@

# dev: what the tests need, and ray, so that `make test` runs the Ray executor's tests on a local
# loopback cluster (plain Ray: no dashboard, no torch of its own); tome: token merging (tomesd, pure
# Python on the installed torch). Not the upscalers extra: spandrel pulls torchvision, and pip would
# replace the chosen torch with the default index's build to match it.
$(STAMP): pyproject.toml $(TORCH_STAMP)
	$(BIN)/python -m pip install -q -e '.[dev,ray,tome]'
	touch $(STAMP)

# The browser test of the check report needs Chromium: install it where we can (root with apt-get);
# elsewhere that test skips and says why. Never fails the build.
browser:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null 2>&1 && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null 2>&1 || \
	  echo "note: could not install chromium; the browser test will skip"; \
	else echo "note: chromium is missing (installing it needs root and apt-get); the browser test will skip"; fi

# Everything, as CI runs it.
test: install browser
	$(BIN)/python -m pytest

# Everything but the tests marked slow.
test-fast: install
	$(BIN)/python -m pytest -m "not slow"

demo: install
	$(BIN)/sdbake run recipes/demo.toml --out outputs
	@echo "The demo's images are in outputs/demo/ (run again: every stage is a cache hit)."

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) outputs
