# Set-up and the two commands of the README. `make run` and `make test` create the
# virtual environment from requirements*.txt on first use.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/synthetic
PY := $(VENV)/bin/python

.PHONY: venv run test test-all clean

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

# The main job on the built-in synthetic dataset (no download).
run: venv
	$(PY) main.py --config=configs/synthetic.py --workdir=$(WORKDIR)

# The default test suite (slow tests deselected); .ci/run calls exactly this.
test: venv
	$(PY) -m pytest

# Everything, slow tests included.
test-all: venv
	$(PY) -m pytest -m ''

clean:
	rm -rf $(VENV) .jax_cache
