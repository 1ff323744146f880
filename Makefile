# Two commands for a fresh machine: `make demo` and `make test`. Both create and reuse .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.flowkit-installed
STEPS ?= 600
OUT ?= out/demo

.PHONY: demo test mutate install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.14.1" "torchaudio==2.11.0"
	$(PY) -m pip install --quiet -e ".[dev,image,audio,text]"
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/flowkit image demo --steps $(STEPS) --out $(OUT) --overwrite

test: $(STAMP)
	$(VENV)/bin/ruff check .  # pyflakes, pycodestyle, import order (pyproject.toml)
	$(PY) -m pytest -q
	FLOWKIT_BF16=0 $(PY) -m pytest -q -m bf16  # again as on a CPU without native bfloat16

mutate: $(STAMP)  # planted bugs, one at a time, against the tests of their file (docs/testing.md); a few minutes
	$(PY) tools/mutate.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
