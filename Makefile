# Quick start: `make lab` (set up, open the notebooks) and `make test` (set up, run every test and notebook).
PYTHON ?= python3
VENV ?= .venv
# Users keep the open spec; CI passes TORCH_SPEC=torch==2.13.0 (a CPU build on local disk there).
TORCH_SPEC ?= torch>=2.6
BIN := $(VENV)/bin
STAMP := $(VENV)/.calgrpo-installed
DATA_DIR ?= $(firstword $(CALGRPO_DATA_DIR) $(wildcard ../shared/data))

.PHONY: setup lab test lint train experiment experiment-v2 colab clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# Jupyter refuses to run as root unless told; containers and Colab-like machines run as root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)
lab: setup
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

lint: setup
	$(BIN)/ruff check .

# The suite runs on up to TEST_WORKERS pytest-xdist workers (one per core); `--dist loadscope` keeps each test module
# and each notebook's cells on one worker (a notebook's cells share one kernel), and OMP_NUM_THREADS=1 gives each
# worker one torch thread, so the workers share the cores instead of fighting over them.
TEST_WORKERS ?= 4
test: setup lint
	CALGRPO_DATA_DIR=$(DATA_DIR) MPLBACKEND=Agg OMP_NUM_THREADS=1 $(BIN)/python -m pytest tests notebooks --nbval-lax -q \
		-n auto --maxprocesses $(TEST_WORKERS) --dist loadscope

train: setup
	$(BIN)/python -m calgrpo_lib train --preset tiny

# CAL credit modes vs plain GRPO on equal budgets (tiny preset): results/cal_vs_grpo.json and its figures.
# Re-running skips the runs already stored; e.g. `make experiment EXPERIMENT_ARGS="--max-steps 50 --overwrite"`.
EXPERIMENT_MODES ?= sequence cal_sparse cal_hybrid prefix
EXPERIMENT_SEEDS ?= 0 1 2
EXPERIMENT_ARGS ?=
experiment: setup
	$(BIN)/python -m calgrpo_lib.experiment --modes $(EXPERIMENT_MODES) --seeds $(EXPERIMENT_SEEDS) \
		--out results/cal_vs_grpo.json $(EXPERIMENT_ARGS)

# Experiment v2 (does *where* the push-down lands matter?): calgrpo_lib.conditions.DEFAULT_V2, 40 runs of 100
# steps, two at a time; results/experiment_v2.json. Resumable run by run: the same command continues where it stopped.
experiment-v2: setup
	$(BIN)/python -m calgrpo_lib.experiment --grid v2 --jobs 2 $(EXPERIMENT_ARGS)

# Open-in-Colab badges and the Colab install cell in every notebook and the README, from the repository's GitHub
# address (kept in pyproject.toml's [project.urls] Repository; REPO=OWNER/NAME sets it). Re-execute the notebooks after.
REPO ?=
colab: setup
	$(BIN)/python -m calgrpo_lib.colab $(if $(REPO),--repo $(REPO),)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
