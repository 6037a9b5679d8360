# Two commands on a fresh machine:  make demo   (the main job)   and   make test   (the suite).
# Both create ./.venv on first use and install what they need into it.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.dfdetect-installed
DEMO_OUT ?= demo_out

.PHONY: demo test bench lint clean-venv

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

bench: $(STAMP)
	for b in bench/*.py; do $(PY) $$b || exit 1; done

lint: $(STAMP)
	$(PY) -m ruff check dfdetect tests bench

clean-venv:
	rm -rf $(VENV)
