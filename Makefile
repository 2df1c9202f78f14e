# Everything a newcomer types. `make run` and `make test` do all the set-up on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR := .demo/tiny
ARGS ?=

.PHONY: run demo test test-fast lint voices tiny bench gpu-check gpu-wheels clean system-deps screenshot

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

# The spec's defaults: the real model from the hub, on the best device available.
run: $(VENV)/.installed
	$(PY) api_server.py $(ARGS)

# A tiny random-weight checkpoint, built offline: for machines without a GPU or the hub. It speaks noise.
$(DEMO_DIR)/TINY_CHECKPOINT.json: model_pool/tiny.py model_pool/prompt/chat_template.jinja | $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m model_pool.tiny $(DEMO_DIR)

tiny: $(DEMO_DIR)/TINY_CHECKPOINT.json

# The random model never picks the stream-end code, so every request runs to its max_new_tokens: the demo's maximum
# is 512 (20 s of audio, a few seconds a request on 2 cores), what the spec's clients ask for. ARGS come after it,
# so `make demo ARGS="--max-new-tokens 2048 --port 9000"` overrides it.
DEMO_MAX_NEW_TOKENS := 512
demo: $(VENV)/.installed tiny
	HF_HUB_OFFLINE=1 $(PY) api_server.py --model-path $(DEMO_DIR)/model \
		--audio-tokenizer-path $(DEMO_DIR)/audio_tokenizer --device cpu --max-new-tokens $(DEMO_MAX_NEW_TOKENS) $(ARGS)

# Debian's Chromium and nginx: the browser tests drive the playground in Chromium, the deployment tests put
# nginx (deploy/nginx.conf) in front of two instances. Installed with apt-get when missing (root or sudo).
system-deps:
	@command -v chromium >/dev/null && command -v nginx >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium nginx-light; }

# Everything; then the slowest tests and fixtures (a server or browser start is a fixture's setup), for a slow run.
test: $(VENV)/.installed system-deps
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q --durations=25 $(ARGS)

# The inner loop: unit and API tests, no real servers, browsers or proxies (about 2 minutes).
test-fast: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q -m "not e2e" $(ARGS)

# docs/playground.png, the README's picture of the playground: taken by the browser test that makes two takes on a
# real server (the tiny model) in Debian's Chromium, and kept under 200 KB.
screenshot: $(VENV)/.installed system-deps
	HF_HUB_OFFLINE=1 PLAYGROUND_SCREENSHOT=docs/playground.png $(PY) -m pytest -q \
		tests/e2e/test_playground_takes.py::test_screenshot
	@size=$$(stat -c %s docs/playground.png); echo "docs/playground.png: $$size bytes"; \
	  [ $$size -lt 204800 ] || { echo "over 200 KB: make the picture smaller"; exit 1; }

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# The side-by-side benchmark (README, Performance): BENCH_ARGS="--size small --compile" by default.
BENCH_ARGS ?= --size small --compile
bench: $(VENV)/.installed
	HF_HUB_OFFLINE=1 $(PY) -m bench $(BENCH_ARGS)

# On a GPU machine (no package registry there), from the project root with .whl/ carried along: the device tests,
# the full-size checkpoint, the GPU probe and the server through HTTP at 1-64 streams, in one call of at most 6
# minutes; gpu_check_out/ holds gpu_check.json, summary.txt and the logs (docs/performance.md). Without CUDA it is a
# dry run up to each stage's first CUDA call (CI runs it); DEVICE=cpu rehearses it on a tiny checkpoint.
gpu-check:
	bash bench/gpu_check.sh

# Where the package registry is: .whl/site.tar.xz (git-ignored), what requirements.txt and the check's own imports
# need beyond the GPU image (bench/gpu_image.txt), derived by bench/gpu_wheels.py: `python -m bench.gpu_wheels`
# lists it, and why each package is carried or not.
gpu-wheels: $(VENV)/.installed
	$(PY) -m bench.gpu_wheels --download .whl

voices: $(VENV)/.installed
	$(PY) examples/make_voice_prompts.py

clean:
	rm -rf .demo .pytest_cache
