# Feedback Loop. `make demo` runs the product on embedded defaults; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate demo browser test lint format screenshots bench bench-gpu bench-gpu-smoke clean

# Without CUDA, torch is pinned to the CPU wheel (a looser pin would download GBs of CUDA).
TORCH_CPU ?= torch==2.13.0

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	command -v nvidia-smi >/dev/null 2>&1 || \
	  $(BIN)/pip install --quiet --disable-pip-version-check '$(TORCH_CPU)'
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Migrate, build the tiny model if missing, seed the demo (accounts with password 'demo', a round
# the tiny model wrote), then serve web and one worker on 127.0.0.1 until Ctrl-C.
demo: migrate
	$(BIN)/python manage.py build_tiny_model
	$(BIN)/python manage.py seed_demo
	@echo "Feedback Loop demo: http://$(HOST):$(PORT)/  (admin / researcher / annotator1..3, password 'demo')"
	$(BIN)/celery -A feedback worker --beat --loglevel=INFO --concurrency=1 \
	  --queues=default,generation,training & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT INT TERM; \
	$(BIN)/gunicorn feedback.wsgi --bind $(HOST):$(PORT) --workers 2 --threads 4 --access-logfile -

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# The browser tests drive Debian's Chromium through Playwright; install it when it is missing
# and we may (root, as in CI). Playwright's own browser download is never used.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "Chromium is missing: 'sudo apt-get install chromium' runs the browser tests too"; \
	  fi; }

# The suite runs in TEST_PROCESSES processes (pytest-xdist; tests/parallel.py gives each its own
# database, artifacts folder and broker database): most of its time is spent waiting on workers,
# servers and a browser, so two overlap well on two cores. TEST_PROCESSES=0 runs it in one.
TEST_PROCESSES ?= 2
test: lint browser
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile $(PYTEST_ARGS)

# Refresh the screenshots in docs/ from the browser tests.
screenshots: install browser
	UPDATE_SCREENSHOTS=1 $(BIN)/python -m pytest tests/frontend -q -k "keyboard_alone or watches or researcher_previews or advances_by_itself or follows_a_disagreement or phone_ranks_by_tapping or guidelines_and_a_preview or gates_deploys_and_rolls_back or rubric_is_a_click_away or why_agreement_is_empty or sees_who_is_who or revises_a_judgment_from_the_recent_list"

# Every benchmark measures the platform against a baseline in the same run, alternating, and
# writes benchmarks/results/<name>.json and .png; the last step writes docs/benchmarks.md.
# They need the local PostgreSQL (127.0.0.1:5432, databases bench_* of their own).
# `make bench QUICK=1` is the short version (under 10 minutes on 2 cores).
QUICK ?=
BENCHMARKS := annotation_api export training_overhead generation_overhead loop scaling active_learning
bench: install
	@for name in $(BENCHMARKS); do \
	  echo "== benchmarks/$$name.py"; \
	  QUICK=$(QUICK) $(BIN)/python benchmarks/$$name.py || exit 1; \
	done
	$(BIN)/python benchmarks/results_page.py

# The lent GPU machine's check (benchmarks/gpu/README.md): a realistic model through both vLLM
# shapes, LoRA and QLoRA training, hot swaps. Not part of `make bench`; GPU_PYTHON is a Python
# with CUDA torch (and vllm, bitsandbytes). The smoke version runs here, on the CPU.
bench-gpu:
	$(or $(GPU_PYTHON),python3) benchmarks/gpu/run_all.py $(ARGS)

bench-gpu-smoke: install
	$(BIN)/python benchmarks/gpu/run_all.py --cpu-smoke

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
