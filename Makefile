# Thin wrappers. Each target sets up what it needs first: a virtual environment in .venv
# with exact versions from requirements/constraints.txt; stamp files make a second run fast.
#   make serve   serve the bundled model (serve + client extras)
#   make test    run the tests (dev extra: everything; plus .venv-triton for the OIP tests)
#   make compose-test  docker-compose.yml end to end: both images built, up, classify, reload, down

PYTHON      ?= python3.11
VENV        ?= .venv
CONSTRAINTS := requirements/constraints.txt
BIN         := $(VENV)/bin
PIP         := $(BIN)/python -m pip --disable-pip-version-check
# --no-build-isolation: build the project with the venv's pinned setuptools and wheel.
# PYTHONWARNINGS=ignore: no setuptools warning about editable installs (every package here
# lives in a folder of its own name, the case it warns about, on purpose).
INSTALL     := PYTHONWARNINGS=ignore $(PIP) install --quiet --no-build-isolation -c $(CONSTRAINTS)

MODELS      ?= models
# DATA empty: cifar10-train's default, --data fetch ($CIFAR10_DATA, else the official archive
# downloaded once into $CIFAR10_DATA_CACHE, default data/, MD5 checked). Or a local image
# folder <class>/*.jpg, cifar-10-python.tar.gz or cifar-10-batches-py/.
DATA        ?=
EPOCHS      ?= 20
RUN_DIR     ?= runs/latest
PYTEST_ARGS ?=
COMPOSE_TEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help setup setup-serve triton-env serve test compose-test protos docs bench train clean-venv

help:
	@echo "make serve    set up (serve + client extras) and serve the model repository $(MODELS) (or CIFAR10_MODEL_PATH=FILE): gRPC :8500, HTTP :8501 (web page, REST), metrics :8502"
	@echo "make test     set up (dev extra) and run pytest (PYTEST_ARGS='-m \"not slow\"' to narrow)"
	@echo "make compose-test  build both images, docker-compose up, classify, see training's model hot-reloaded, down -v"
	@echo "make setup    create $(VENV) with the dev extra, pinned by $(CONSTRAINTS)"
	@echo "make triton-env  the separate Triton-client venv (.venv-triton) for OIP tests and perf_analyzer"
	@echo "make protos   regenerate protos/cifar10_protos/ from protos/*.proto"
	@echo "make docs     regenerate docs/configuration.md from the server's settings"
	@echo "make bench    run the benchmarks"
	@echo "make train    train on DATA=$(or $(DATA),fetch) for EPOCHS=$(EPOCHS) in RUN_DIR=$(RUN_DIR) (exports RUN_DIR/model.onnx)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(INSTALL) pip setuptools wheel

$(VENV)/.installed-serve: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "Installing the serve and client extras into $(VENV) (pinned)..."
	$(INSTALL) -e ".[serve,client]"
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	@echo "Installing the dev extra (serve, client, train, test tools) into $(VENV) (pinned; a few minutes the first time)..."
	$(INSTALL) -e ".[dev]"
	@touch $@ $(VENV)/.installed-serve

setup: $(VENV)/.installed-dev
setup-serve: $(VENV)/.installed-serve

# The separate Triton-client venv (.venv-triton) for the Open Inference Protocol tests and
# perf_analyzer; the script returns at once when it is already set up.
triton-env:
	@bash bench/setup_triton_env.sh

# A file in CIFAR10_MODEL_PATH is served instead of the repository (a repository of one).
serve: $(VENV)/.installed-serve
	@echo "Serving $${CIFAR10_MODEL_PATH:-the model repository $${CIFAR10_MODEL_REPOSITORY:-$(MODELS)}}; from a second terminal: $(BIN)/cifar10-client models"
	@if [ -n "$$CIFAR10_MODEL_PATH" ]; then exec $(BIN)/cifar10-serve; \
	else CIFAR10_MODEL_REPOSITORY="$${CIFAR10_MODEL_REPOSITORY:-$(MODELS)}" exec $(BIN)/cifar10-serve; fi

test: $(VENV)/.installed-dev triton-env
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Podman stands in for Docker (its Docker-compatible socket, Debian's docker-compose 1.29);
# host-setup.sh installs them where missing (root, Debian). COMPOSE_TEST_ARGS: e.g. --no-resume.
compose-test: $(VENV)/.installed-serve
	@bash tests/compose/host-setup.sh
	$(BIN)/python -m tests.compose.run $(COMPOSE_TEST_ARGS)

protos: $(VENV)/.installed-dev
	$(BIN)/python protos/generate.py

docs: $(VENV)/.installed-serve
	$(BIN)/python -m cifar10_serving.settings > docs/configuration.md

bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

train: $(VENV)/.installed-dev
	$(BIN)/cifar10-train train --data "$(or $(DATA),fetch)" --epochs $(EPOCHS) --run-dir "$(RUN_DIR)"

clean-venv:
	rm -rf $(VENV)
