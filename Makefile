# One entry point for set-up, tests and the demo. Every target creates or reuses .venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# glibc returning freed memory to the OS costs up to a fifth of a CPU training step in page faults.
export GLIBC_TUNABLES ?= glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736
# Real corpora live beside the checkout when the workplace provides them.
ifneq ($(wildcard ../shared/data),)
export NANOFORMER_DATA ?= $(abspath ../shared/data)
endif

.PHONY: install test test-all demo clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first, pinned, so that nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

test-all: $(STAMP)
	$(PY) -m pytest -q -m ''

demo: $(STAMP)
	$(VENV)/bin/nanoformer demo

clean:
	rm -rf $(VENV) build *.egg-info
