# Two entry points for a fresh machine: `make demo` and `make test` (both set up .venv if needed).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# pinned first so no dependency pulls another torch build (torchvision 0.29.1 loads only beside torch 2.14.1)
PIP := $(PY) -m pip install --quiet -c .ci/constraints.txt

.PHONY: setup demo data-demo test library dataset clean

setup: $(STAMP)

$(STAMP): pyproject.toml .ci/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.14.1 torchvision==0.29.1
	$(PIP) -e ".[test]"
	touch $(STAMP)

demo: setup
	$(PY) infer.py examples/srtio3_001.tif --out results

data-demo: setup
	$(PY) -m data.library stats
	$(PY) -m data.build --config configs/demo.yaml
	$(PY) -m data.preview datasets/demo --out results/demo_preview.png

# one worker per core, at most 4 (each holds torch); a test file stays on one worker, so its module
# fixtures (a training run, a benchmark build) are made once
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 4 --dist loadfile

library: setup
	$(PY) -m data.library build

dataset: setup
	$(PY) -m data.build --config configs/data.yaml

clean:
	rm -rf results datasets .cache
