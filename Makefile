# Two commands do all set-up on a fresh machine:
#   make demo   create .venv, install, train CRAM on the demo preset, fit γ, write a report
#   make test   create .venv, install, ruff check, run the test suite (CI runs this through .ci/run);
#               the notebooks run once, inside it (tests/test_notebooks.py)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cram-installed
TSTAMP := $(VENV)/.cram-test-installed
DEMO   ?= runs/demo
SEEDS  ?= 1
# pytest-xdist workers for make test (auto: one per core; 0: the suite runs in one process)
JOBS   ?= auto
export PYTENSOR_FLAGS ?= base_compiledir=$(CURDIR)/.cache/pytensor
export MPLBACKEND ?= Agg

.PHONY: install install-test demo test test-slow bench lint clean-demo docs

# the package and what it runs with (make demo); the test tools come with install-test only
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e .
	$(BIN)/python -c "import torch, sys; cuda = torch.version.cuda; sys.exit(f'a CUDA build of torch ({cuda}) was installed on a machine without a GPU: reinstall torch==2.13.0 with plain pip' if cuda and not torch.cuda.is_available() else 0)"
	touch $(STAMP)

$(TSTAMP): $(STAMP)
	$(BIN)/pip install -q -e ".[test]"
	touch $(TSTAMP)

install: $(STAMP)

install-test: $(TSTAMP)

demo: install
	$(BIN)/python -m cram.commands.demo --out $(DEMO) --seeds $(SEEDS)

test: install-test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(JOBS) --dist loadfile tests

test-slow: install-test
	$(BIN)/python -m pytest -q --runslow tests

lint: install-test
	$(BIN)/ruff check .

# docs/benchmarks.md from results/ and docs/claims.md from claims/registry.toml (the tests check
# that the committed pages equal these renderings)
docs: install
	$(BIN)/python -m cram docs render

clean-demo:
	rm -rf $(DEMO)
