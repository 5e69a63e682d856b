# The two commands of README.md: `make quickstart` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed
# pip compiles the installed files one at a time; `compileall -j 0` does the same on every core (the whole
# set-up from no .venv, 3 paired runs on 2 cores: median 114 s -> 96 s, ratio 0.90). Folders of tests inside
# packages are skipped: torch ships a Python 3.12-only file there, and nothing imports them.

.PHONY: quickstart test test-fast test-unit lint bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q --no-compile -e '.[test]'
	$(VENV)/bin/python -m compileall -q -j 0 -x '/tests?/|/testing/' $$($(VENV)/bin/python -c \
		'import sysconfig; print(sysconfig.get_paths()["purelib"])') > /dev/null
	touch $(STAMP)

quickstart: $(STAMP)
	$(VENV)/bin/plantray quickstart --out quickstart

lint: $(STAMP)
	$(VENV)/bin/ruff check plantray jobs tests bench

test: lint
	RAY_DATA_DISABLE_PROGRESS_BARS=1 $(VENV)/bin/python -m pytest -q -rs --durations=25 tests

# The inner loop: every test that needs no Ray, no server or child process and no training run (markers
# set in tests/conftest.py from the fixtures each test uses).
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not (slow or ray or cluster or subprocess or browser)" tests

# Pure functions only (seconds).
test-unit: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests/unit

bench: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[test,bench]'
	$(VENV)/bin/python bench/classify_throughput.py --out bench/results
	$(VENV)/bin/python bench/classify_throughput.py --precision bf16 --out bench/results
	$(VENV)/bin/python bench/scale.py --out bench/results

clean:
	rm -rf quickstart .pytest_cache .ruff_cache
