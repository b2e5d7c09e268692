# Two commands on a fresh machine (Python >= 3.11):
#   make quickstart   # .venv with everything, then the whole pipeline on the default config (CPU)
#   make test         # .venv, the SLURM/munge packages for the cluster tests (root or sudo), pytest
#   make test-fast    # the unit tier only (tests/unit), for the edit-test loop
# What CI runs besides (.ci/run and .github/workflows/ci.yml alike):
#   make lint         # snakemake --lint (default and paper configs), snakefmt --check, ruff check, ruff format --check
#   make dry-run      # snakemake -n: the default config, the paper config, the paper config through profiles/slurm
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
PYTHON_TREES := src tests bench workflow/scripts
# a wheel index to take torch and torchvision from (GitHub CI: the CPU wheels instead of ~5 GB of CUDA)
TORCH_INDEX ?=
# what `make dry-run` fills the site profile's placeholders with, as a user fills them in
SLURM_PARTITION ?= gpu
SLURM_ACCOUNT ?= ci

.PHONY: quickstart test test-fast lint dry-run format venv system paper-dry-run

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(if $(TORCH_INDEX),$(BIN)/python -m pip install -q torch torchvision --index-url $(TORCH_INDEX))
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

lint: venv
	$(BIN)/snakemake --lint
	$(BIN)/snakemake --lint --configfile config/paper.yaml
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/ruff check $(PYTHON_TREES)
	$(BIN)/ruff format --check $(PYTHON_TREES)

dry-run: venv paper-dry-run
	$(BIN)/snakemake -n --quiet rules
	SLURM_PARTITION='$(SLURM_PARTITION)' SLURM_ACCOUNT='$(SLURM_ACCOUNT)' bash .ci/slurm-dry-run.sh $(BIN)/snakemake

format: venv
	$(BIN)/ruff check --fix $(PYTHON_TREES)
	$(BIN)/ruff format $(PYTHON_TREES)
	$(BIN)/snakefmt Snakefile workflow/rules

paper-dry-run: venv
	$(BIN)/snakemake -n --quiet rules --configfile config/paper.yaml

# requirements/lock.txt, the known-good set: the versions in .venv of everything gammasweep[test] needs
.PHONY: lock
lock: venv
	$(BIN)/python tests/dependencies.py lock > requirements/lock.txt
