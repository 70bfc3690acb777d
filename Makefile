# Two entry points: `make demo` (main job on bundled data) and `make test`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/featlab demo

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) featlab_demo
