# onnx-compress — set-up, demo, tests, benchmarks, and an example of chaining passes as file targets.
#   make demo    set up everything and run the main job on the shared MiniLM SST-2 model
#   make test    set up and run the whole test suite
#   make bench   every recipe in configs/sst2 and configs/mrpc: tables and charts in bench/out/
#   make chain   convert → prune → quantize → eval as file targets (incremental, -j2 safe)
#   make test-pip  `pip install .` in a fresh virtual environment, then the installed CLI and the
#                  Python example (scripts/test_pip_install.sh)
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/onnx-compress
ORT_LIB := .ort/lib/libonnxruntime.so.1.32.0
SHARED ?= ../shared
DEMO_MODEL ?= $(SHARED)/models/minilm-l6-sst2/model.onnx

.PHONY: setup demo test test-pip bench chain build clean-chain

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
	  echo "Export a BERT SST-2 classifier with internet access, for example:"; \
	  echo "  pip install torch transformers onnx && python scripts/export_hf.py textattack/bert-base-uncased-SST-2 models/bert-sst2"; \
	  echo "then run: make demo DEMO_MODEL=models/bert-sst2/model.onnx"; exit 1; fi
	$(BIN) inspect $(DEMO_MODEL)
	$(BIN) eval --task sst2 --model $(DEMO_MODEL)
	@mkdir -p models/demo
	@if [ -f "$(SHARED)/data/glue/sst2/train.tsv" ]; then \
	  echo "== calibrated pruning to 60% of the encoder MACs (about a minute on 2 cores)"; \
	  $(BIN) prune --target-macs 0.6 --calib-data $(SHARED)/data/glue/sst2/train.tsv $(DEMO_MODEL) models/demo/sst2.pruned.onnx && \
	  $(BIN) eval --task sst2 --model models/demo/sst2.pruned.onnx; fi

test: $(ORT_LIB) data/glue
	$(CARGO) test --locked

# The pip install: needs no .ort/ (the environment brings onnxruntime); builds in ./target.
test-pip:
	SHARED="$(SHARED)" scripts/test_pip_install.sh

# Every recipe of both tasks with a shared model: results.{md,csv,json} and Pareto charts per task.
BENCH_TASKS ?= sst2 mrpc
bench: setup
	@for t in $(BENCH_TASKS); do \
	  echo "== bench $$t (configs/$$t)"; \
	  $(BIN) bench --task $$t configs/$$t --out bench/out/$$t || exit 1; done

# Chaining passes as file targets: each model is rebuilt only when its input changed, each step
# writes its output atomically (an interrupted step leaves no half-written file for make to
# trust), so `make -j2 chain` is safe. The block between the markers is the README's example,
# word for word (tests/readme.rs keeps them equal): copy it into your own Makefile as it is.
ONNX_COMPRESS := $(BIN)
chain: build

# >>> chain example
ONNX_COMPRESS ?= onnx-compress
chain: models/chain/sst2.eval.json models/chain/sst2.pruned.eval.json models/chain/sst2.pruned.int8.eval.json
models/chain/sst2.onnx: ../shared/models/minilm-l6-sst2/model.onnx
	@mkdir -p $(@D)
	$(ONNX_COMPRESS) convert $< $@                 # embeds the tokenizer, starts the history
models/chain/sst2.pruned.onnx: models/chain/sst2.onnx
	$(ONNX_COMPRESS) prune --target-macs 0.6 --calib-data data/glue/sst2/train.tsv $< $@
models/chain/sst2.pruned.int8.onnx: models/chain/sst2.pruned.onnx
	$(ONNX_COMPRESS) quantize --mode dynamic $< $@
models/chain/%.eval.json: models/chain/%.onnx
	$(ONNX_COMPRESS) eval --task sst2 --model $< --json > $@.tmp && mv $@.tmp $@
# <<< chain example

# In this Makefile the chain's models wait for the build (order-only: a rebuilt binary does not
# remake them).
models/chain/sst2.onnx models/chain/sst2.pruned.onnx models/chain/sst2.pruned.int8.onnx: | build

clean-chain:
	rm -rf models/chain
