# Two commands on a fresh machine: `make train` (embedded default dataset) and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install train data test test-all clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt > $(VENV)/pip.log 2>&1 || (grep -v "is ignored: it is neither" $(VENV)/pip.log; exit 1)
	# the project itself, editable: scrcl and datamodules import from anywhere, no sys.path edits
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e . >> $(VENV)/pip.log 2>&1 || (tail -20 $(VENV)/pip.log; exit 1)
	$(PY) -c "import torch, lightning, torch_geometric, scanpy, scrcl, datamodules"
	touch $(STAMP)

install: $(STAMP)

# The embedded default: scanpy's bundled PBMC 68k subset (700 cells, works offline).
train: $(STAMP)
	$(PY) train.py --dataset pbmc68k $(ARGS)

# Every file the tests read (tests/real_data.txt), fetched into $SCRCL_DATA_DIR or ./data from the public sources
# (or $SCRCL_DATA_MIRROR), checksum-verified; the tests fetch what is missing themselves, saying what and how many MB.
data: $(STAMP)
	$(PY) -m datamodules.prefetch --list tests/real_data.txt

# The default test run (slow tests excluded) on two pytest-xdist workers, a test module each at a time: much of a
# test is single-threaded (a subprocess's imports, scanpy, numba's compile): on 2 cores (2026-12-07) the default run
# took 506 s on two workers and 792 s one by one. TEST_WORKERS=0 runs them one by one.
# `make test-all` runs everything, the same way (the slow tests alone: 45 took 453 s on two workers, 46 later 376 s).
TEST_WORKERS ?= 2
XDIST = -n $(TEST_WORKERS) --dist loadscope

test: $(STAMP)
	$(PY) -m pytest -q $(XDIST) $(PYTEST_ARGS)

test-all: $(STAMP)
	$(PY) -m pytest -q $(XDIST) -m "slow or not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
