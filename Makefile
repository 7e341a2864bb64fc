# One-command set-up: a virtualenv in .venv, torch first (TORCH can name another build), then si-hf.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
RECIPE ?= recipes/copy/tiny.yaml
ARGS ?=
BIN := $(VENV)/bin

.PHONY: install run seeds test quality clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install "$(TORCH)"
	$(BIN)/pip install -e ".[dev]"
	touch $@

install: $(BIN)/.installed

# si-hf-launch is accelerate launch that exits with the script's code (2 recipe, 3 Hub, 4 rounds on disk)
run: install
	$(BIN)/si-hf-launch --config_file accelerate_config.yaml scripts/run_rounds.py --config $(RECIPE) $(ARGS)

# the same recipe for several seeds, aggregated (SEEDS="0 1 2" by default)
seeds: install
	$(BIN)/python scripts/run_seeds.py --config $(RECIPE) --seeds $(or $(SEEDS),0 1 2) $(ARGS)

test: install
	$(BIN)/python -m pytest -q

quality: install
	$(BIN)/ruff check si_hf scripts tests

clean:
	rm -rf $(VENV) runs .pytest_cache
