# The two commands of the README:
#   make run   — the main job: the whole workflow on the embedded default (config.yaml), 2 cores
#   make test  — the test suite
# Both bootstrap .venv on first use from pyproject.toml + constraints.txt.

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CORES ?= 2
PYTEST_ARGS ?=

.PHONY: run test venv lint dryrun clean-results

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run 'make PYTHON=/path/to/python3.11 ...'"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24" 
	# constraints.txt pins every transitive dependency, so a fresh install resolves the same set
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	$(BIN)/python -c "import dgl, torch, tblite.interface, rdkit, pyarrow; print('environment ok: torch', torch.__version__, 'dgl', dgl.__version__)"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES)

dryrun: $(STAMP)
	$(BIN)/snakemake --profile profiles/local --cores $(CORES) -n

test: $(STAMP)
	# pytest exits 5 when it collected no test: that is a failure here, never a pass
	@$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "error: pytest collected no tests"; exit 1; fi; exit $$rc

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check Snakefile workflow/rules

clean-results:
	rm -rf results .snakemake
