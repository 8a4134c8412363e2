# Two commands do all set-up on a fresh machine:
#   make demo   - create .venv, install, train on the bundled corpus (~2 min), print samples
#   make test   - create .venv with dev tools, run lint, type checks and the whole test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# constraints.txt pins torch to the CPU build on our machines; users get pyproject's ranges.
PIP_INSTALL := $(PY) -m pip install --disable-pip-version-check -q -c constraints.txt

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/textweaver train builtin:shakespeare --out runs/demo --max-time 2m --resume
	@for t in 0.2 0.5 1.0; do \
	  echo; echo "===== temperature $$t ====="; \
	  $(VENV)/bin/textweaver generate runs/demo --prompt "ROMEO:" --length 400 --temperature $$t --seed 1; \
	done

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

test: lint
	$(PY) -m pytest -q --timeout 600

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache
