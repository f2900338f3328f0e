PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: demo test test-slow install clean

$(BIN)/inferno-mip: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/inferno-mip

demo: install
	$(BIN)/inferno-mip solve scenarios/inferno-large
	@echo
	@echo "inferno's greedy vs the exact solvers on the same scenario:"
	$(BIN)/inferno-mip compare scenarios/inferno-large --solvers greedy,highs,cpsat,pyomo

test: install
	$(BIN)/python -m pytest -m "not slow"

# Heavy sweeps and builds (marker `slow`); .ci/run runs them after `make test`.
test-slow: install
	$(BIN)/python -m pytest -m slow; rc=$$?; [ $$rc -eq 5 ] && rc=0; exit $$rc

clean:
	rm -rf $(VENV) build *.egg-info
