# Set-up and the two commands of the README. `make run` and `make test` create the
# virtual environment from requirements*.txt on first use.
PYTHON ?= python3
VENV ?= .venv
WORKDIR ?= runs/synthetic
PY := $(VENV)/bin/python
# The oneDNN convolution extension, built against the venv's libdnnl (irstd_jax/onednn_conv.py).
ONEDNN_CONV := $(VENV)/lib/irstd_jax_onednn_conv.so

.PHONY: venv run test test-all clean

$(VENV)/.installed: requirements.txt requirements-dev.txt requirements-onednn.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-onednn.txt || \
		echo "oneDNN not installed; convolutions run on lax.conv"
	touch $@

# Optional: on failure it prints one line, and convolutions run on lax.conv.
$(ONEDNN_CONV): irstd_jax/ext/onednn_conv.cc $(VENV)/.installed
	@$(PY) -m irstd_jax.onednn_conv --build || true

venv: $(VENV)/.installed $(ONEDNN_CONV)

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
