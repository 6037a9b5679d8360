# Two commands on a fresh machine:  make demo   (the main job)   and   make test   (the suite).
# Both create ./.venv on first use and install what they need into it.
PYTHON ?= python3
VENV   ?= .venv
# Colab's Python (3.13, which gets PyAV 19): `make test-py313` runs the suite there too (CI does).
# Its venv lives outside the clone (torch for 3.13 is a multi-GB download): built once per machine,
# reused by every clone; PYTHONPATH makes this clone's dfdetect the one imported, whichever
# clone the venv's editable install points at.
PYTHON313 ?= $(shell PYENV_VERSION=3.13.0 pyenv which python3.13 2>/dev/null || command -v python3.13)
VENV313   ?= $(HOME)/.cache/dfdetect/venv-py3.13
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dfdetect-installed
DEMO_OUT ?= demo_out

.PHONY: demo test test-fast test-py313 fresh-install-demo bench lint clean-venv

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dfdetect demo $(DEMO_OUT)

test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider

test-fast: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow"

test-py313:
	@test -n "$(PYTHON313)" || { echo "python3.13 not found: install it (e.g. pyenv install 3.13.0) or pass PYTHON313=..."; exit 1; }
	PYTHONPATH="$(CURDIR)" $(MAKE) test PYTHON="$(PYTHON313)" VENV="$(VENV313)"

# What a user gets from `pip install .` (no editable install, no dev tools): a new venv, then the
# demo run from another folder, so the shipped sample faces and weights must come from the package.
FRESH ?= $(HOME)/.cache/dfdetect/venv-fresh
fresh-install-demo:
	rm -rf $(FRESH) && $(PYTHON) -m venv $(FRESH)
	$(FRESH)/bin/python -m pip install --quiet --disable-pip-version-check .
	$(FRESH)/bin/python -m pip check
	tmp=$$(mktemp -d) && cd $$tmp && $(FRESH)/bin/python -m dfdetect demo demo_out && test -s demo_out/report.md && rm -rf $$tmp

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check dfdetect tests bench

clean-venv:
	rm -rf $(VENV)
