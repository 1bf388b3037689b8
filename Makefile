# Two commands do all set-up on a fresh machine:
#   make demo   -- creates .venv/ (first time only) and runs the embedded demo
#   make test   -- creates .venv/ (first time only) and runs the test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -c requirements/constraints.txt
STAMP := $(VENV)/.installed

.PHONY: env demo test clean-demo

env: $(STAMP)

$(STAMP): setup.py requirements/runtime.txt requirements/tests.txt requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) -r requirements/runtime.txt -r requirements/tests.txt
	$(PIP) --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/demo.py

test: $(STAMP)
	$(PY) -m pytest tests

clean-demo:
	rm -rf .cache/embedded work_dirs/demo
