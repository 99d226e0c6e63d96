# Two commands: `make demo` and `make test`. Both create .venv and install on first use;
# the stamp file makes a second run skip the install unless pyproject.toml changed.
PY      ?= python3.11
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.raycat-installed
WORKDIR ?= demo-data

# Ray processes started here (tests, the demo's embedded Ray) bind to 127.0.0.1 only.
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ?= 0

.PHONY: demo test check bench docs install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# pyproject.toml gives compatible ranges; the two commands install the exact versions the tests
# ran with (torch/torchvision from local disk). '.[dev]' pulls every extra (sim, report, gcs, rail).
PINS := torch==2.14.1 torchvision==0.29.1 'ray[default,data,train]==2.60.0'
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(PINS)
	$(BIN)/pip install -q -e '.[dev]' $(PINS)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/raycat demo --workdir $(WORKDIR)

# Lint, format and types first (seconds), then the suite.
test: $(STAMP) check
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

check: $(STAMP)
	$(BIN)/ruff check raycat tests jobs benchmarks
	$(BIN)/ruff format --check raycat tests jobs benchmarks
	$(BIN)/mypy

bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

docs: $(STAMP)
	$(BIN)/python -c "from raycat.config import reference_markdown as r; print(r())" > docs/configuration.md

clean:
	rm -rf $(WORKDIR) .pytest_cache
