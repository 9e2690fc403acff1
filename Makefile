# The front door. `make convert MODE=int8` and `make test` set everything up.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

# Empty: the commands' own default model (converter.DEFAULT_MODEL, smollm2-135m).
MODEL ?=
MODE ?= int8
SEQ_LEN ?=
CALIBRATION ?= builtin
BUILD_DIR ?= build
OVERWRITE ?=
MODES ?= fp32,fp16,dynamic,int8,int16x8,int4-b32
THREADS ?= 1,2
RESULTS_DIR ?= results
PEERS ?= 1
BENCH_FLAGS ?=
PYTEST_ARGS ?=
RESULTS ?=
RUNTIMES ?=
PROBE_OUT ?=
TARGET_RUNTIME ?=
KEEP_FLOAT ?=
RECIPE ?=
GENERATE ?=
CONTEXT ?=
PREFILL ?=
VERBOSE ?=
MAX_PPL_INCREASE ?= 2%
ANDROID_ASSETS := android/app/src/main/assets

export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2

MODEL_FLAG = $(if $(MODEL),--model=$(MODEL))
# With RECIPE= the recipe decides the mode; MODE= is passed then only when given (and must agree).
MODE_FLAG = $(if $(RECIPE),$(if $(filter command line,$(origin MODE)),--mode=$(MODE)),--mode=$(MODE))
CONVERT_FLAGS = $(MODEL_FLAG) $(MODE_FLAG) --calibration=$(CALIBRATION) --build_dir=$(BUILD_DIR) \
	$(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite) $(if $(TARGET_RUNTIME),--target_runtime=$(TARGET_RUNTIME)) \
	$(if $(KEEP_FLOAT),--keep_float=$(KEEP_FLOAT)) $(if $(VERBOSE),--verbose) $(if $(RECIPE),--recipe=$(RECIPE)) \
	$(if $(GENERATE),--generate) $(if $(CONTEXT),--context_length=$(CONTEXT)) $(if $(PREFILL),--prefill_lengths=$(PREFILL)) $(if $(filter auto,$(MODE)),--max_ppl_increase=$(MAX_PPL_INCREASE))

PROMPT ?=
MAX_NEW_TOKENS ?=
.PHONY: bench-generation generate litertlm lint setup convert convert-all android bench report bench-fidelity test test-large clean help pi-pack pi-report runtime-probe debug

help:
	@echo "make convert MODE=<fp32|fp16|dynamic|int8|int16x8> [MODEL=smollm2-135m|tiny-gpt2|gpt2-6l|path] [SEQ_LEN=n] [OVERWRITE=1] [TARGET_RUNTIME=tflite-runtime==2.14]"
	@echo "    [KEEP_FLOAT=attention,mlp_down,logits,SOFTMAX,name:<regex>]  int8/int16x8: ops that run in float"
	@echo "    [RECIPE=recipe.json|report.json]  a saved recipe, or a report to rebuild its model; [VERBOSE=1] TensorFlow's output too"
	@echo "make convert MODE=auto [MAX_PPL_INCREASE=2%] [MODEL=...]  smallest, then fastest model within the budget; Pareto table in $(BUILD_DIR)/<model>/<model>_auto_search.md"
	@echo "make convert-all [MODEL=...] [MODES=fp32,int8]  every mode, then the table in build/<model>/modes.md"
	@echo "make convert MODE=dynamic GENERATE=1 [CONTEXT=1024] [PREFILL=32,128]  prefill/decode signatures with a KV cache"
	@echo "make generate PROMPT=\"The capital of France is\" [MODEL=...] [MODE=dynamic|fp16|fp32] [MAX_NEW_TOKENS=64]"
	@echo "make litertlm [MODEL=...] [MODE=dynamic|fp16|fp32] [PROMPT=\"...\"] [OVERWRITE=1]  $(BUILD_DIR)/<model>/<model>_<mode>.litertlm for LiteRT-LM"
	@echo "make android MODE=int8 [MODEL=...] [GENERATE=1 [CONTEXT=n]] [OUT=$(ANDROID_ASSETS)] [OVERWRITE=1]  model, tokenizer, manifest for an app"
	@echo "make bench [MODEL=...] [THREADS=1,2] [PEERS=0]  convert what is missing, benchmark every mode + baselines"
	@echo "make bench-generation [MODEL=...] [GEN_MODES=fp32,fp16,dynamic] [THREADS=1,2] [PEERS=0]  prefill/decode tok/s, TTFT,"
	@echo "                              memory, roofline; window-recompute, keras-hub generate and llama.cpp baselines;"
	@echo "                              LiteRT-LM's own benchmark on each mode's bundle beside the harness's"
	@echo "make report                   $(RESULTS_DIR)/report.md and plots from every result"
	@echo "make bench-fidelity           harness timing vs LiteRT's own benchmark tool"
	@echo "make pi-pack [MODEL=...] [MODES=fp32,int8] [GENERATE=1 GEN_MODES=dynamic] [OVERWRITE=1]  $(BUILD_DIR)/pi-pack-<model>.tar.gz for a Raspberry Pi"
	@echo "make pi-report RESULTS=<folder>  the Pi's results (copied back) merged with $(RESULTS_DIR)/ into <folder>/report.md"
	@echo "make runtime-probe [RUNTIMES=tflite-runtime==2.14.0,...]  re-probe converter/runtime_support.json"
	@echo "make debug MODE=int8 [MODEL=...] [OVERWRITE=1]  per-tensor quantization error report: $(BUILD_DIR)/<model>/<model>_<mode>_debug.{json,md}"
	@echo "make test                     lint (ruff), layer contracts (import-linter), then the tests (tiny models, no downloads)"
	@echo "make test-large               tests behind the 'large' marker"
	@echo "make setup                    create $(VENV) from pinned versions"

setup: $(STAMP)

# Reinstalls only when the pins change; a second `make setup` is a no-op.
$(STAMP): setup.cfg requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test,bench,litertlm]'
	@# The Java tokenizer tests compile with javac; install a JDK where the machine lacks one.
	@command -v javac >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless; } \
		|| echo "warning: no javac; install a JDK (8 or later) for tests/test_java_tokenizer.py"
	touch $(STAMP)

convert: $(STAMP)
	$(PY) -m converter $(CONVERT_FLAGS)

convert-all: $(STAMP)
	$(PY) -m converter.cli.table $(MODEL_FLAG) --modes=$(MODES) --build_dir=$(BUILD_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite)

# Continues PROMPT with build/<model>/<model>_<mode>_generate.tflite (converted first when missing); MODE defaults
# to dynamic here, the mode to generate with.
generate: $(STAMP)
	$(if $(PROMPT),,$(error Pass PROMPT="...": the text to continue, e.g. make generate PROMPT="The capital of France is"))
	$(PY) -m converter.cli.generate $(MODEL_FLAG) $(if $(filter command line,$(origin MODE)),--mode=$(MODE)) \
		--prompt="$(PROMPT)" --build_dir=$(BUILD_DIR) $(if $(MAX_NEW_TOKENS),--max_new_tokens=$(MAX_NEW_TOKENS)) \
		$(if $(CONTEXT),--context_length=$(CONTEXT)) $(if $(VERBOSE),--verbose)

# build/<model>/<model>_<mode>.litertlm for LiteRT-LM (the generation model converted first when missing); MODE
# defaults to dynamic here. With PROMPT, LiteRT-LM's engine then continues it.
litertlm: $(STAMP)
	$(PY) -m converter.cli.litertlm $(MODEL_FLAG) $(if $(filter command line,$(origin MODE)),--mode=$(MODE)) \
		--build_dir=$(BUILD_DIR) $(if $(OVERWRITE),--overwrite) $(if $(PROMPT),--prompt="$(PROMPT)") \
		$(if $(CONTEXT),--context_length=$(CONTEXT)) $(if $(VERBOSE),--verbose)

# Converts first when build/<model>/<model>_<mode>.tflite is missing.
android: $(STAMP)
	$(PY) -m converter.cli.android $(MODEL_FLAG) --mode=$(MODE) --calibration=$(CALIBRATION) --build_dir=$(BUILD_DIR) \
		--out=$(or $(OUT),$(ANDROID_ASSETS)) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite) \
		$(if $(GENERATE),--generate) $(if $(CONTEXT),--context_length=$(CONTEXT))

bench: $(STAMP)
	$(PY) -m converter.cli.bench $(MODEL_FLAG) --modes=$(MODES) --threads=$(THREADS) --build_dir=$(BUILD_DIR) \
		--results_dir=$(RESULTS_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(filter 0,$(PEERS)),--nopeers) $(BENCH_FLAGS)

# Generation models (prefill/decode) in every float and dynamic mode, with the window-recompute, keras-hub and
# llama.cpp baselines and LiteRT-LM on the same bundles; `make report` renders them.
GEN_MODES ?= fp32,fp16,dynamic,int4-b32
bench-generation: $(STAMP)
	$(PY) -m converter.cli.bench_generation $(MODEL_FLAG) --modes=$(GEN_MODES) --threads=$(THREADS) --build_dir=$(BUILD_DIR) \
		--results_dir=$(RESULTS_DIR) $(if $(filter 0,$(PEERS)),--nokeras --nollama_cpp --nolitertlm)

report: $(STAMP)
	$(PY) -m benchmarks.report --results_dir=$(RESULTS_DIR)

# fp32 and dynamic, the modes compared with the peers; converted first if missing.
bench-fidelity: $(STAMP)
	$(PY) -m converter.cli.bench --fidelity $(MODEL_FLAG) --threads=$(THREADS) --build_dir=$(BUILD_DIR) \
		--results_dir=$(RESULTS_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN))

# Compares the quantized model with its fp32 twin tensor by tensor (converter/quant_debug.py).
debug: $(STAMP)
	$(PY) -m converter.cli.debug $(MODEL_FLAG) --mode=$(MODE) --build_dir=$(BUILD_DIR) $(if $(OVERWRITE),--overwrite)

# Lint, formatting and the layer contracts first: they take seconds and say the most.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --config setup.cfg

test: lint
	$(PY) -m pytest -m "not large" $(PYTEST_ARGS)

test-large: $(STAMP)
	$(PY) -m pytest -m large $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD_DIR)

# Raspberry Pi: convert the modes that are missing, then pack them (README "Raspberry Pi").
pi-pack: $(STAMP)
	$(PY) -m converter.cli.table $(MODEL_FLAG) --modes=$(MODES) --build_dir=$(BUILD_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) > /dev/null
	$(PY) -m converter.cli.pi_pack $(MODEL_FLAG) --modes=$(MODES) --build_dir=$(BUILD_DIR) $(if $(OVERWRITE),--overwrite) \
		$(if $(GENERATE),--generation_modes=$(GEN_MODES)) $(if $(PROMPT),--prompt="$(PROMPT)") \
		$(if $(CONTEXT),--context_length=$(CONTEXT))

pi-report: $(STAMP)
	$(if $(RESULTS),,$(error Pass RESULTS=<folder>: the results folder copied back from the Pi, e.g. make pi-report RESULTS=pi-results))
	$(PY) -m benchmarks.pi_report --results_dir=$(RESULTS) --host_results_dir=$(RESULTS_DIR)

# Loads probe models in each runtime (venvs under $(BUILD_DIR)/venvs) and rewrites the support table.
runtime-probe: $(STAMP)
	$(PY) -m converter.cli.runtime_probe --work_dir=$(BUILD_DIR)/runtime-probe --venvs_dir=$(BUILD_DIR)/venvs $(if $(RUNTIMES),--runtimes=$(RUNTIMES)) $(if $(PROBE_OUT),--out=$(PROBE_OUT))
