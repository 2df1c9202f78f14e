# Everything a newcomer types. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := .demo/tiny
ARGS ?=

.PHONY: run demo test lint voices tiny bench clean system-deps

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The spec's defaults: the real model from the hub, on the best device available.
run: $(VENV)/.installed
	$(PY) api_server.py $(ARGS)

# A tiny random-weight checkpoint, built offline: for machines without a GPU or the hub. It speaks noise.
$(DEMO_DIR)/TINY_CHECKPOINT.json: model_pool/tiny.py model_pool/chat_template.jinja | $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m model_pool.tiny $(DEMO_DIR)

tiny: $(DEMO_DIR)/TINY_CHECKPOINT.json

demo: $(VENV)/.installed tiny
	HF_HUB_OFFLINE=1 $(PY) api_server.py --model-path $(DEMO_DIR)/model \
		--audio-tokenizer-path $(DEMO_DIR)/audio_tokenizer --device cpu $(ARGS)

# Debian's Chromium and nginx: the browser tests drive the playground in Chromium, the deployment tests put
# nginx (deploy/nginx.conf) in front of two instances. Installed with apt-get when missing (root or sudo).
system-deps:
	@command -v chromium >/dev/null && command -v nginx >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium nginx-light; }

test: $(VENV)/.installed system-deps
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# The side-by-side benchmark (README, Performance): BENCH_ARGS="--size small --compile" by default.
BENCH_ARGS ?= --size small --compile
bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m bench $(BENCH_ARGS)

voices: $(VENV)/.installed
	$(PY) examples/make_voice_prompts.py

clean:
	rm -rf .demo .pytest_cache
