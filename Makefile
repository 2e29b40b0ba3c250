# onnx-compress — set-up, demo, tests, and an example of chaining passes as file targets.
#   make demo    set up everything and run the main job on the shared MiniLM SST-2 model
#   make test    set up and run the whole test suite
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/onnx-compress
ORT_LIB := .ort/lib/libonnxruntime.so.1.32.0
SHARED ?= ../shared
DEMO_MODEL ?= $(SHARED)/models/minilm-l6-sst2/model.onnx

.PHONY: setup demo test build clean-models FORCE

setup: $(ORT_LIB) build data/glue

$(ORT_LIB): scripts/install_ort.sh
	scripts/install_ort.sh

build:
	$(CARGO) build --release --locked

# The GLUE data the tool uses by default (a link to the shared copy when present).
data/glue:
	@if [ -d "$(SHARED)/data/glue" ]; then mkdir -p data && ln -sfn "$$(cd $(SHARED)/data/glue && pwd)" data/glue; \
	 else echo "note: $(SHARED)/data/glue not found; pass --data DIR to eval"; fi

demo: setup
	@if [ ! -f "$(DEMO_MODEL)" ]; then \
	  echo "The demo model $(DEMO_MODEL) is not here."; \
	  echo "Export one with internet access: pip install torch transformers onnx && python scripts/export_hf.py <hf-model-id> models/<name>"; \
	  echo "then run: make demo DEMO_MODEL=models/<name>/model.onnx"; exit 1; fi
	$(BIN) inspect $(DEMO_MODEL)
	$(BIN) eval --task sst2 --model $(DEMO_MODEL)
	@mkdir -p models/demo
	@if [ -f "$(SHARED)/data/glue/sst2/train.tsv" ]; then \
	  echo "== calibrated pruning to 60% of the encoder MACs (about a minute on 2 cores)"; \
	  $(BIN) prune --target-macs 0.6 --calib-data $(SHARED)/data/glue/sst2/train.tsv $(DEMO_MODEL) models/demo/sst2.pruned.onnx && \
	  $(BIN) eval --task sst2 --model models/demo/sst2.pruned.onnx; fi

test: $(ORT_LIB) data/glue
	$(CARGO) test --locked
