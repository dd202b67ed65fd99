# The two quickstart commands are `make demo` and `make test`; everything else is for developers.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STREAMS := $(BIN)/streams

.PHONY: demo test lint typecheck native-check unit integration bench down clean

# The native Avro encoder (Rust, PyO3) is built by the editable install; cargo must be on PATH.
$(BIN)/.installed: pyproject.toml streams/_native/Cargo.toml $(wildcard streams/_native/src/*.rs streams/_native/src/*/*.rs)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

## demo: start the embedded stack, apply topics and schemas, publish a sample batch, show where it landed.
demo: $(BIN)/.installed
	$(STREAMS) demo

## test: lint, strict type check, the native crate's gates, unit and integration tests (the integration tests start their own stack).
test: $(BIN)/.installed lint typecheck native-check
	$(BIN)/pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(STREAMS) schemas codegen --check

typecheck: $(BIN)/.installed
	$(BIN)/mypy streams tests bench

# The Rust crate under the same gates as the Python: its tests (linked against the venv's interpreter),
# clippy with warnings as errors on every target, rustfmt.
CARGO_NATIVE := --manifest-path streams/_native/Cargo.toml
native-check: $(BIN)/.installed
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo test $(CARGO_NATIVE) --quiet
	PYO3_PYTHON=$(abspath $(BIN)/python) cargo clippy $(CARGO_NATIVE) --all-targets --quiet -- -D warnings
	cargo fmt $(CARGO_NATIVE) --check

unit: $(BIN)/.installed
	$(BIN)/pytest -q -m "not integration"

integration: $(BIN)/.installed
	$(BIN)/pytest -q -m integration

## bench: every benchmark beside its peer on a stack of its own, then docs/benchmarks.md from scratch (~30 min).
bench: $(BIN)/.installed
	$(BIN)/python bench/run_all.py

down: $(BIN)/.installed
	$(STREAMS) dev down

clean:
	rm -rf $(VENV) .streams .mypy_cache .ruff_cache .pytest_cache
