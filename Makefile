# GENet_Res50: training, export, serving, clients. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

# Interpreters: found on PATH, then under pyenv; override with PYTHON311=... PYTHON37=...
PYTHON311 ?= $(shell scripts/find_python.sh 3.11)
PYTHON37 ?= $(shell scripts/find_python.sh 3.7)
VENV := .venv
VENV_LITE := .venv-lite
VENV_TRITON := .venv-triton
PY := $(VENV)/bin/python
PY_LITE := $(VENV_LITE)/bin/python

# ONEDNN_MAX_CPU_ISA and PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION: every Python entry point sets them
# itself (runtime_env.py), so they are not exported here.
export PYTHONPATH := $(CURDIR)
# The Lite converter and Lite verification run in this interpreter (MindSpore and Lite cannot share a process).
export GENET_LITE_PYTHON ?= $(CURDIR)/$(VENV_LITE)/bin/python

CONFIG ?= training/configs/demo.yaml
ARGS ?=
CKPT ?= runs/latest/final.ckpt
DATA ?= data/fmnist/val
NAME ?= genet_res50
FORMATS ?=
MODELS ?= models
PORT ?= 8500
METRICS_PORT ?= 8501
HTTP_PORT ?= 8000
SERVE_ARGS ?=
# Built by `make data`; a prerequisite of the targets that need the data but pass ARGS elsewhere.
TEST_DATA := data/photos/labels.json

.PHONY: help setup protos browser h2load data train train-distributed eval export export-random serve classify bench compare reference-model bench-reference reference-trained demo stress stress-reference test test-all clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 20

setup: $(VENV)/.installed $(VENV_LITE)/.installed protos ## create .venv (3.11, MindSpore) and .venv-lite (3.7, MindSpore Lite)

$(VENV)/.installed: requirements/main.txt
	test -x $(PY) || $(PYTHON311) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/main.txt
	touch $@

# tritonclient (the stock KServe v2 client the tests check the server with) pins protobuf < 7, which the
# server's grpcio 1.85 refuses: it gets an environment of its own, used only by tests as subprocesses.
$(VENV_TRITON)/.installed: requirements/triton.txt
	test -x $(VENV_TRITON)/bin/python || $(PYTHON311) -m venv $(VENV_TRITON)
	$(VENV_TRITON)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/triton.txt
	touch $@

$(VENV_LITE)/.installed: requirements/lite.txt
	test -x $(PY_LITE) || $(PYTHON37) -m venv $(VENV_LITE)
	$(PY_LITE) -m pip install --quiet --disable-pip-version-check -r requirements/lite.txt
	touch $@

protos: genet/v1/classifier_pb2_grpc.py inference/grpc_predict_v2_pb2_grpc.py ## generate the gRPC stubs from protos/ (grpcio-tools 1.62.3: loads under protobuf 4.x and 7.x)

genet/v1/classifier_pb2_grpc.py: protos/genet/v1/classifier.proto $(VENV_LITE)/.installed
	$(PY_LITE) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/genet/v1/classifier.proto

# The Open Inference Protocol (KServe v2): package `inference`, generated into inference/.
inference/grpc_predict_v2_pb2_grpc.py: protos/inference/grpc_predict_v2.proto $(VENV_LITE)/.installed
	$(PY_LITE) -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/inference/grpc_predict_v2.proto

# The browser test and make demo's screenshot drive Debian's headless Chromium (installed here as root, as in CI).
browser: ## install Debian's chromium and chromium-driver when missing (the page's browser test, the demo's screenshot)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# The benchmark's lean load generator (clients/benchmark/h2load.py), installed the same way.
h2load: ## install Debian's nghttp2-client (h2load, the benchmark's load generator) when missing
	@command -v h2load >/dev/null || { \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client; }

data: $(VENV)/.installed ## build data/fmnist (Fashion-MNIST as JPEG folders) and data/photos
	$(PY) -m training.prepare_data $(ARGS)

train: setup ## train CONFIG (default: the demo config); ARGS="key=value ..." overrides
	$(PY) -m training.train --config $(CONFIG) $(ARGS)

train-distributed: setup ## data-parallel training with msrun on WORKERS local CPU workers
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH msrun --worker_num=$(or $(WORKERS),2) --local_worker_num=$(or $(WORKERS),2) \
	  --master_port=$(or $(MASTER_PORT),8118) --log_dir=runs/msrun_logs --join=True \
	  training/train.py --config $(CONFIG) distributed=true $(ARGS)

eval: setup ## evaluate CKPT on DATA: top1, top5 and the number of images
	$(PY) -m training.evaluate --ckpt $(CKPT) --data $(DATA) $(ARGS)

# CONFIG and LABELS default to the files beside the checkpoint; given on the command line they are passed on.
export: setup ## export CKPT to a new version under models/NAME/ (FORMATS=mindir,onnx,mslite,air,om; CONFIG=, LABELS= for a checkpoint without them beside it)
	$(PY) -m export --ckpt $(CKPT) --name $(NAME) --repository $(MODELS) $(if $(FORMATS),--formats $(FORMATS)) \
	  $(if $(filter command line environment,$(origin CONFIG)),--config $(CONFIG)) $(if $(LABELS),--labels $(LABELS)) $(ARGS)

export-random: setup ## export a randomly initialised network of CONFIG, BatchNorm calibrated on photos (for tests and benchmarks)
	$(PY) -m export --random-init --calibrate-bn --config $(CONFIG) --name $(NAME) --repository $(MODELS) $(if $(FORMATS),--formats $(FORMATS)) $(ARGS)

serve: setup ## serve the latest exported models: gRPC (genet.v1, KServe v2) on PORT, KServe v2 HTTP and the browser page on HTTP_PORT
	$(PY) -m serving --model-repository $(MODELS) --port $(PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT) $(SERVE_ARGS)

classify: setup ## classify IMAGES (default data/photos/*) with the server at TARGET (default 127.0.0.1:PORT)
	$(PY) -m clients.classify --target $(or $(TARGET),127.0.0.1:$(PORT)) $(or $(IMAGES),$(wildcard data/photos/*.jpg)) $(ARGS)

# Servers run 2 inference workers of 1 thread, one per core, beside the front (measured: 2 Lite threads
# in one worker on shared cores cost 2.25 instead of 1.68 CPU ms per image; with 16 images per request
# at concurrency 16 two 1-thread workers serve 1,910-2,010 img/s, one 1,635-1,700). The pool hands a
# batch to the worker that finished last, so under light load one worker serves. The offline
# baselines keep their faster 2 threads in one process. Lite and OpenVINO side by side: 4 servers (6 where bf16 is native) x
# 3 protocols x 2 images-per-request values x 3 levels of 1 + 3 s, then accuracy through each backend.
BENCH_BACKENDS ?= mslite,openvino:f32,openvino:bf16
BENCH_PROTOCOLS ?= genet,kserve-grpc,kserve-http
# h2load sends the closed-loop levels: the Python generator's ~0.3 CPU ms per call would be taken from a
# server on the same cores (LOAD_GENERATOR=python measures with it; README, "Clients and benchmark").
# The reference targets keep the Python generator: at 224 px a call computes for ~60 ms, and it cycles
# through all the photos, where h2load repeats one request.
LOAD_GENERATOR ?= h2load
LOAD_PREREQUISITE := $(if $(filter h2load,$(LOAD_GENERATOR)),h2load)
bench: setup $(LOAD_PREREQUISITE) ## Lite and OpenVINO (f32; bf16 where the CPU has it) servers at max batch 1 and 16 on the latest model: c=1,4,16 with 1 and 16 images per request over genet.v1, KServe v2 gRPC and HTTP, accuracy on DATA and the offline baseline of each backend -> reports/
	$(PY) -m clients.benchmark --start-server --model-repository $(MODELS) --backend $(BENCH_BACKENDS) \
	  --server-arg=--model-name=$(NAME) --server-arg=--max-queue-size=512 --server-arg=--threads=1 --server-arg=--instances=2 --max-batch-size 1,16 \
	  --concurrency 1,4,16 --warmup 1 --duration 3 --images-per-request 1,16 --protocol $(BENCH_PROTOCOLS) \
	  --load-generator $(LOAD_GENERATOR) --data $(DATA) --out reports $(ARGS)

# A change's effect on the server, side by side: the server of BEFORE (another checkout, e.g. `git worktree
# add ../before HEAD~1`, with this one's genet/ and inference/ stubs copied in if protos/ did not change)
# and this checkout's, in alternating rounds of single images at c=16 (clients/benchmark/checkouts.py).
compare: setup $(LOAD_PREREQUISITE) ## the server of BEFORE (another checkout) against this one's, alternating rounds: single images at c=16 -> img/s ratio per round
	@test -n "$(BEFORE)" || { echo "usage: make compare BEFORE=path/to/another/checkout [ARGS=...]" >&2; exit 2; }
	$(PY) -m clients.benchmark.checkouts --checkout $(BEFORE) --checkout . --model-repository $(MODELS) \
	  --server-arg=--model-name=$(NAME) --images $(DATA) --load-generator $(LOAD_GENERATOR) $(ARGS)

# The reference network (theta-plus, 224 px, 1000 classes) with random weights and BatchNorm statistics
# calibrated on real photos, exported once into REFERENCE_MODELS; servers and baselines on 2 threads.
# Its near-tied classes fail export's bf16 top-1 check, so its bf16 server is bf16-unverified (named so).
REFERENCE_MODELS ?= reports/reference/models
REFERENCE_BACKENDS ?= mslite,openvino:f32,openvino:bf16-unverified
REFERENCE_BENCH = $(PY) -m clients.benchmark --start-server --threads 2 --max-batch-size 8 --concurrency 1,4,16 \
  --images $(wildcard data/photos/*.jpg)

reference-model: setup ## export the reference theta-plus at 224 (BN-calibrated random init) into REFERENCE_MODELS, once
	test -n "$$(ls $(REFERENCE_MODELS)/genet_reference 2>/dev/null)" || $(PY) -m export --random-init --calibrate-bn \
	  --config training/configs/theta_plus.yaml --name genet_reference --repository $(REFERENCE_MODELS) --formats onnx,mslite

bench-reference: reference-model ## reference theta-plus at 224: Lite and OpenVINO (f32; bf16 where the CPU has it) servers at max batch 8, c=1,4,16 on data/photos, each against its offline baseline, and ONNX Runtime -> reports/reference/
	$(REFERENCE_BENCH) --model-repository $(REFERENCE_MODELS) --backend $(REFERENCE_BACKENDS) \
	  --compare-runtimes onnxruntime --out reports/reference $(ARGS)

# The same network trained briefly on Fashion-MNIST (10 classes; ~20 min on 2 cores, once): weights whose
# logits carry signal, so export checks bf16 by top-1 for real and the servers' accuracy can be compared.
# Trained under runs/reference-trained (runs/latest stays the demo's), exported into REFERENCE_TRAINED_MODELS.
REFERENCE_TRAINED_RUNS ?= runs/reference-trained
REFERENCE_TRAINED_MODELS ?= reports/reference-trained/models
REFERENCE_TRAINED_BACKENDS ?= mslite,openvino:f32,openvino:bf16

reference-trained: setup $(TEST_DATA) ## the reference theta-plus at 224 trained on Fashion-MNIST: export (bf16 verified on trained weights), then the bench-reference servers with top-1 over 1,000 val images each -> reports/reference-trained/
	test -f $(REFERENCE_TRAINED_RUNS)/latest/final.ckpt || $(PY) -m training.train \
	  --config training/configs/theta_plus_fmnist224.yaml run.output_dir=$(REFERENCE_TRAINED_RUNS)
	test -n "$$(ls $(REFERENCE_TRAINED_MODELS)/genet_reference_trained 2>/dev/null)" || $(PY) -m export \
	  --ckpt $(REFERENCE_TRAINED_RUNS)/latest/final.ckpt --name genet_reference_trained \
	  --repository $(REFERENCE_TRAINED_MODELS) --formats onnx,mslite
	$(REFERENCE_BENCH) --model-repository $(REFERENCE_TRAINED_MODELS) --backend $(REFERENCE_TRAINED_BACKENDS) \
	  --data data/fmnist/val --data-images 1000 --out reports/reference-trained $(ARGS)

stress: setup ## fault-and-load suite: bad inputs and 4x overload (gRPC and HTTP), cancellation, SIGTERM and hot reload under load (SIGTERM also over a stream), kill -9 + resume; ARGS=--quick for the CI form -> reports/stress.json
	$(PY) -m clients.stress --report reports/stress.json $(ARGS)

stress-reference: reference-model ## the fault-and-load suite's serving checks on the reference network at 224 px (the training check is size-free: skipped) -> reports/reference/stress.json
	$(PY) -m clients.stress --model-repository $(REFERENCE_MODELS) --skip training --report reports/reference/stress.json $(ARGS)

demo: ## the main job end to end: setup -> data -> train -> export -> serve -> classify -> bench
	scripts/demo.sh

clean: ## remove environments, generated stubs and build outputs (not data, runs or models)
	rm -rf $(VENV) $(VENV_LITE) $(VENV_TRITON) genet inference build .pytest_cache

# The tests run on the real data `make data` builds (the page's browser test needs data/photos); built
# here without ARGS, which `make test` passes to pytest.
$(TEST_DATA): $(VENV)/.installed
	$(PY) -m training.prepare_data

test: setup $(TEST_DATA) $(VENV_TRITON)/.installed browser h2load ## run the test suite (sets up everything it needs)
	$(PY) -m pytest tests $(ARGS)

test-all: setup $(TEST_DATA) $(VENV_TRITON)/.installed browser h2load ## the test suite plus the slow checks (theta and theta-minus reference exports, ~4 min more)
	$(PY) -m pytest tests -m "slow or not slow" $(ARGS)
