VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: install test lint typecheck format demo bench soak clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

test: install
	$(PY) -m pytest -q $(PYTEST_ARGS)

# ruff: lint rules and the formatter's layout (pyproject.toml [tool.ruff]); `make format` fixes both
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# mypy: the whole etl package, strict for the engine modules (pyproject.toml [tool.mypy])
typecheck: install
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

demo: install
	bash scripts/demo.sh

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)
	$(PY) bench/sync.py $(SYNC_BENCH_ARGS)
	$(PY) bench/fallback.py $(FALLBACK_BENCH_ARGS)

soak: install
	$(PY) soak/run.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) .etl reports build *.egg-info
