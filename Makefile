# Two commands on a fresh machine (Python >= 3.11):
#   make quickstart   # .venv with everything, then the whole pipeline on the default config (CPU)
#   make test         # .venv, the SLURM/munge packages for the cluster tests (root or sudo), pytest
#   make test-fast    # the unit tier only (tests/unit), for the edit-test loop
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: quickstart test test-fast format venv system paper-dry-run

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

quickstart: venv
	$(BIN)/snakemake --cores $(CORES)

system:
	@if [ "$$(id -u)" -eq 0 ]; then bash .ci/install-system.sh; else sudo bash .ci/install-system.sh; fi

test: venv system
	$(BIN)/pytest

test-fast: venv
	$(BIN)/pytest tests/unit

format: venv
	$(BIN)/ruff check --fix src tests bench workflow/scripts
	$(BIN)/ruff format src tests bench workflow/scripts
	$(BIN)/snakefmt Snakefile workflow/rules

paper-dry-run: venv
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml
