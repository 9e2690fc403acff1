# The front door. `make convert MODE=int8` and `make test` set everything up.
SHELL := /bin/bash
PYTHON_BOOT ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

MODEL ?= tiny-gpt2
MODE ?= int8
SEQ_LEN ?=
CALIBRATION ?= builtin
BUILD_DIR ?= build
OVERWRITE ?=
MODES ?= fp32,fp16,dynamic,int8,int16x8
THREADS ?= 1,2
RESULTS_DIR ?= results
PEERS ?= 1
BENCH_FLAGS ?=
PYTEST_ARGS ?=
ANDROID_ASSETS := android/app/src/main/assets

COMMA := ,

export KERAS_BACKEND := tensorflow
export TF_CPP_MIN_LOG_LEVEL := 2

CONVERT_FLAGS = --model=$(MODEL) --mode=$(MODE) --calibration=$(CALIBRATION) --build_dir=$(BUILD_DIR) \
	$(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite)

.PHONY: setup convert convert-all android bench report bench-fidelity test test-large clean help

help:
	@echo "make convert MODE=<fp32|fp16|dynamic|int8|int16x8> [MODEL=tiny-gpt2|path] [SEQ_LEN=n] [OVERWRITE=1]"
	@echo "make convert-all [MODEL=...] [MODES=fp32,int8]  every mode, then the table in build/<model>/modes.md"
	@echo "make android MODE=int8 [MODEL=...] [OUT=$(ANDROID_ASSETS)] [OVERWRITE=1]  model, tokenizer, manifest for an app"
	@echo "make bench [MODEL=...] [THREADS=1,2] [PEERS=0]  convert what is missing, benchmark every mode + baselines"
	@echo "make report                   $(RESULTS_DIR)/report.md and plots from every result"
	@echo "make bench-fidelity           harness timing vs LiteRT's own benchmark tool"
	@echo "make test                     the test suite (tiny models, no downloads)"
	@echo "make test-large               tests behind the 'large' marker"
	@echo "make setup                    create $(VENV) from pinned versions"

setup: $(STAMP)

# Reinstalls only when the pins change; a second `make setup` is a no-op.
$(STAMP): setup.cfg requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON_BOOT) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c requirements.lock -e '.[test,bench]'
	@# The Java tokenizer tests compile with javac; install a JDK where the machine lacks one.
	@command -v javac >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq default-jdk-headless; } \
		|| echo "warning: no javac; install a JDK (8 or later) for tests/test_java_tokenizer.py"
	touch $(STAMP)

convert: $(STAMP)
	$(PY) -m converter $(CONVERT_FLAGS)

convert-all: $(STAMP)
	$(PY) -m converter.table --model=$(MODEL) --modes=$(MODES) --build_dir=$(BUILD_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite)

# Converts first when build/<model>/<model>_<mode>.tflite is missing.
android: $(STAMP)
	$(PY) -m converter.android --model=$(MODEL) --mode=$(MODE) --calibration=$(CALIBRATION) --build_dir=$(BUILD_DIR) \
		--out=$(or $(OUT),$(ANDROID_ASSETS)) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(OVERWRITE),--overwrite)

bench: $(STAMP)
	$(PY) -m converter.bench --model=$(MODEL) --modes=$(MODES) --threads=$(THREADS) --build_dir=$(BUILD_DIR) \
		--results_dir=$(RESULTS_DIR) $(if $(SEQ_LEN),--seq_len=$(SEQ_LEN)) $(if $(filter 0,$(PEERS)),--nopeers) $(BENCH_FLAGS)

report: $(STAMP)
	$(PY) -m benchmarks.report --results_dir=$(RESULTS_DIR)

# fp32 and dynamic: the modes whose speed the README compares with the peers.
bench-fidelity: $(STAMP)
	$(PY) -m converter.table --model=$(MODEL) --modes=fp32,dynamic --build_dir=$(BUILD_DIR) > /dev/null
	$(PY) -m benchmarks.fidelity --model=$(BUILD_DIR)/$(MODEL)/$(MODEL)_fp32.tflite,$(BUILD_DIR)/$(MODEL)/$(MODEL)_dynamic.tflite \
		$(foreach t,$(subst $(COMMA), ,$(THREADS)),--threads=$(t)) --results_dir=$(RESULTS_DIR)

test: $(STAMP)
	$(PY) -m pytest -m "not large" $(PYTEST_ARGS)

test-large: $(STAMP)
	$(PY) -m pytest -m large $(PYTEST_ARGS)

clean:
	rm -rf $(BUILD_DIR)
