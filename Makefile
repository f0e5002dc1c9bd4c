# Feedback Loop. `make demo` runs the product on embedded defaults; `make test` runs the suite.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install migrate demo web worker test lint format clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

install: $(STAMP)

migrate: install
	$(BIN)/python manage.py migrate --noinput

# Migrate, seed the demo (accounts with password 'demo'), then serve web and one worker on
# 127.0.0.1 until Ctrl-C.
demo: migrate
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

test: lint
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .hypothesis
