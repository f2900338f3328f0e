PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-slow install clean

# The package and what it runs on; nothing for testing.
$(BIN)/inferno-mip: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $@

# Test tools on top (pytest, pytest-xdist, hypothesis, prometheus-client); Ray only for the slow tests.
$(VENV)/.test-deps: $(BIN)/inferno-mip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

$(VENV)/.slow-test-deps: $(VENV)/.test-deps
	$(BIN)/pip install --quiet -e '.[test,ray]'
	touch $@

install: $(BIN)/inferno-mip

demo: install
	$(BIN)/inferno-mip solve scenarios/inferno-large
	@echo
	@echo "inferno's greedy vs the exact solvers on the same scenario:"
	$(BIN)/inferno-mip compare scenarios/inferno-large --solvers greedy,highs,cpsat,pyomo
	@echo
	@echo "Next: run '. $(VENV)/bin/activate' once in this shell; then the README's inferno-mip commands work as printed."

# Two workers, one per core: every server a test starts takes a free port and its own folder.
test: $(VENV)/.test-deps
	$(BIN)/python -m pytest -m "not slow" -n 2

# Heavy sweeps and builds (marker `slow`); .ci/run runs them after `make test`.
test-slow: $(VENV)/.slow-test-deps
	$(BIN)/python -m pytest -m slow; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
