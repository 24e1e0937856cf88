# One entry point per job. `make demo` and `make test` are the two a newcomer needs.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint format typecheck check bench fuzz all

install:
	bash scripts/setup.sh

demo: install
	$(BIN)/python -m tests.lab.demo

test: install
	$(BIN)/ruff format --check screener tests bench
	$(BIN)/ruff check screener tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/screener check --config deploy/screener.toml
	$(BIN)/pytest --cov --cov-report=term -q

format:
	$(BIN)/ruff format screener tests bench
	$(BIN)/ruff check --fix screener tests bench

lint:
	$(BIN)/ruff format --check screener tests bench
	$(BIN)/ruff check screener tests bench
	$(BIN)/lint-imports

typecheck:
	$(BIN)/mypy

bench: install
	$(BIN)/python -m bench.flag_latency
	$(BIN)/python -m bench.flag_e2e
	$(BIN)/python -m bench.ami_intake
	$(BIN)/python -m bench.screen_decision
	$(BIN)/python -m bench.call_setup
	$(BIN)/python -m bench.statistics_scale
	$(BIN)/python -m bench.load

fuzz: install
	$(BIN)/python -m bench.fuzz --inputs 1000000

all: lint typecheck test
