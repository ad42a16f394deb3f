# placerec: every target is safe to run twice. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help
UV_VERSION := 0.13.9
# uv on PATH if there is one, else the one pip installs into this Python (`python3 -m uv`)
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
RUN := $(UV) run --frozen
# compiled once at install: every task process, CLI call and test worker then imports from .pyc
# (an environment with PYTHONDONTWRITEBYTECODE would otherwise recompile Airflow and pandas each time)
export UV_COMPILE_BYTECODE := 1
PYTEST_ARGS ?=

.PHONY: help setup browser up down status demo nsmc test test-unit test-dags test-integration lint format bench clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

setup: ## install uv (pinned) and the locked Python deps into .venv
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) sync --frozen

# root installs Debian packages itself; anyone else through sudo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser: ## Debian's Chromium and a Korean font for the browser test (apt-get; Playwright never downloads a browser)
	@{ command -v chromium >/dev/null 2>&1 && dpkg -s fonts-nanum >/dev/null 2>&1; } || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-nanum; }

up: setup ## start OpenSearch (k-NN), the embeddings endpoint, Spark Connect, PostgreSQL and Airflow (127.0.0.1)
	$(RUN) placerec dev up

down: ## stop what `make up` started
	$(RUN) placerec dev down

status: ## show each service, its URL and health
	$(RUN) placerec dev status

demo: up ## 7 days of demo data: ingested by an Airflow backfill, enriched, trained and evaluated (the DAGs)
	$(RUN) placerec demo --days 7 --seed 42

nsmc: setup ## the README's NSMC evaluation: import, keywords (sampled), train + evaluate (state in .local/nsmc)
	$(RUN) placerec dev up --only embeddings
	bash scripts/nsmc.sh

test: lint up browser ## lint, then every test tier against the real services (unit, dags, integration)
	bash scripts/pytest.sh $(PYTEST_ARGS)

test-unit: setup ## fast tests, no services
	bash scripts/pytest.sh -m unit $(PYTEST_ARGS)

test-dags: setup ## DAG integrity
	bash scripts/pytest.sh -m dags $(PYTEST_ARGS)

test-integration: up browser ## tests against real OpenSearch, Spark, Iceberg, Airflow
	bash scripts/pytest.sh -m integration $(PYTEST_ARGS)

lint: setup ## ruff (with Airflow AIR rules), ruff-format check, mypy on src/
	$(RUN) ruff check .
	$(RUN) ruff format --check .
	$(RUN) mypy src

format: setup ## apply ruff fixes and formatting
	$(RUN) ruff check --fix .
	$(RUN) ruff format .

bench: up ## benchmarks (figures, not pass/fail): results in bench/results/*.json
	$(RUN) python bench/enrich_throughput.py
	$(RUN) python bench/embeddings_throughput.py
	$(RUN) python bench/enrich_replay.py
	$(RUN) python bench/train_scale.py

clean: down ## stop services and delete the state folder (.local: caches, tables, logs)
	rm -rf .local
