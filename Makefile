# The two commands a newcomer needs: `make demo` (the tour) and `make test` (everything CI runs).
# Both create the virtual environment in .venv on first use and reuse it afterwards: the
# demo installs only what the tour needs (the `tour` extra: SQLAlchemy and redis-py), the
# tests the whole dev toolchain.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
DEMO_INSTALLED := $(VENV)/.demo-installed

.PHONY: demo test lint typecheck pytest unit integration bench-smoke docs bench clean

$(INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(INSTALLED)

# A .venv with the dev toolchain already has everything the tour needs.
$(DEMO_INSTALLED): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if [ ! $(INSTALLED) -nt pyproject.toml ]; then \
		$(BIN)/python -m pip install --quiet --upgrade pip && \
		$(BIN)/python -m pip install --quiet -e '.[tour]'; \
	fi
	touch $(DEMO_INSTALLED)

demo: $(DEMO_INSTALLED)
	$(BIN)/python examples/tour

# pytest runs last so its summary line closes the output.
test: lint typecheck bench-smoke docs pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .

typecheck: $(INSTALLED)
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing

pytest: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit tests/integration

unit: $(INSTALLED)
	$(BIN)/python -m pytest tests/unit

integration: $(INSTALLED)
	$(BIN)/python -m pytest tests/integration

bench-smoke: $(INSTALLED)
	$(BIN)/python -m benchmarks --quick --out benchmarks/results/quick > /dev/null

docs: $(INSTALLED)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache benchmarks/results/quick
