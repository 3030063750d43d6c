# Visual Search: `make run` to try it, `make test` to check it. See README.md.
PYTHON ?= python3
VENV ?= .venv
PORT ?= 8000
BIN := $(VENV)/bin
MANAGE := $(BIN)/python manage.py

.PHONY: run test test-postgres lint format bench load worker web clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base-installed: requirements/base.txt requirements/runtime.txt | $(BIN)/python
	$(BIN)/pip install -r requirements/base.txt
	touch $@

$(VENV)/.dev-installed: requirements/dev.txt requirements/base.txt requirements/runtime.txt | $(BIN)/python
	$(BIN)/pip install -r requirements/dev.txt
	touch $@ $(VENV)/.base-installed

## run: install, migrate, create the admin login, load the demo catalog, serve web + worker
run: $(VENV)/.base-installed
	$(MANAGE) migrate --noinput
	$(MANAGE) collectstatic --noinput -v0
	$(MANAGE) ensure_admin
	$(MANAGE) load_demo_catalog --if-empty
	@echo "Visual Search: http://127.0.0.1:$(PORT)/  (admin: /admin/, API: /api/docs/, health: /api/health/ready/)"
	PATH="$(abspath $(BIN)):$$PATH" PORT=$(PORT) docker/serve.sh

## test: install what the tests need and run them all (slow ones included)
test: $(VENV)/.dev-installed
	$(BIN)/python -m pytest

## test-postgres: the tests that use the database, against PostgreSQL (DATABASE_URL, default
## local postgres); the rest run the same code on any database, and `make test` runs them
test-postgres: $(VENV)/.dev-installed
	DATABASE_URL=$${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test} \
	TESTS_USING_THE_DATABASE_ONLY=1 $(BIN)/python -m pytest

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.dev-installed
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## bench: speed measurements (ratios within one run), not part of `make test`; each
## benchmark's output replaces its block in docs/benchmarks.md (bench/record_in_docs.py)
RECORD := $(BIN)/python bench/record_in_docs.py
bench: $(VENV)/.dev-installed
	$(RECORD) vectorstore $(BIN)/python bench/bench_vectorstore.py
	$(RECORD) exact-scoring $(BIN)/python bench/bench_exact_scoring.py
	$(RECORD) embedding $(BIN)/python bench/bench_embedding.py
	$(RECORD) service $(BIN)/python bench/bench_service.py --engines torch,onnx,onnx-int8
	$(RECORD) tags $(BIN)/python bench/bench_tags.py
	$(RECORD) sync $(BIN)/python bench/bench_sync.py
	$(RECORD) million $(BIN)/python bench/bench_million.py

## load: 60 s of searches at 8 clients against `make run` on $(PORT), started with
## SEARCH_RATE_LIMIT= (empty); LOAD_ARGS="--seconds 20 --clients 4" to change them
load: $(VENV)/.base-installed
	$(BIN)/python bench/load_search.py --url http://127.0.0.1:$(PORT) $(LOAD_ARGS)

worker: $(VENV)/.base-installed
	$(BIN)/celery -A visualsearch worker --loglevel=INFO

web: $(VENV)/.base-installed
	PORT=$(PORT) $(BIN)/gunicorn visualsearch.wsgi -c docker/gunicorn.conf.py

clean:
	rm -rf var/
