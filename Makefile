# videoai: two commands do everything on a fresh Debian 12 machine.
#   make demo   set up what is missing, build, run the demo pipeline, print what was detected
#   make test   set up what is missing, then fmt check, clippy -D warnings and every test
# Other targets: deps (set-up only), build, install (plugin + videoai-events into ~/.local),
# sample, bench (all benchmarks; bench-<element> for one), clean.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
RELEASE_DIR := $(CURDIR)/target/release
export GST_PLUGIN_PATH := $(RELEASE_DIR)$(if $(GST_PLUGIN_PATH),:$(GST_PLUGIN_PATH))

SAMPLE ?= samples/demo.mp4
MODEL ?= models/common_det.onnx
LABELS ?= models/common_det.labels
EVENTS ?= events.db
PLUGIN_INSTALL_DIR ?= $(HOME)/.local/share/gstreamer-1.0/plugins
BIN_INSTALL_DIR ?= $(HOME)/.local/bin

.PHONY: all deps deps-gpu build demo sample picture test meson-check bench bench-adaptivequeue bench-framesync bench-onnxinfer bench-raftsink bench-videoaitrace bench-objecttracker install clean

all: build

deps:
	@scripts/setup.sh

# ONNX Runtime with the CUDA/TensorRT providers (optional, ~256 MB), into .deps/onnxruntime-gpu.
deps-gpu:
	@scripts/setup.sh --gpu

build: deps
	$(CARGO) build --release

sample: deps
	@scripts/make-sample.sh $(SAMPLE)

# docs/demo-detections.png: the demo clip's last frame with its detections drawn (README picture).
picture: build sample
	@scripts/make-picture.sh $(SAMPLE) docs/demo-detections.png

demo: build sample
	@echo "[demo] filesrc ! qtdemux ! h264parse ! avdec_h264 ! onnxinfer ! raftsink (pipelines/demo-cpu.pipeline)"
	@scripts/run-pipeline.sh pipelines/demo-cpu.pipeline \
		INPUT=$(SAMPLE) MODEL=$(MODEL) LABELS=$(LABELS) EVENTS=$(EVENTS) -- -q
	@echo "[demo] events in $(EVENTS); summary (target/release/videoai-events summary $(EVENTS)):"
	@$(RELEASE_DIR)/videoai-events summary $(EVENTS)
	@echo "[demo] text was drawn at (pipelines/sample-text.txt, top-left of each text box):"
	@scripts/make-sample.sh --places 1280 720

test: deps
	$(CARGO) fmt --check
	$(CARGO) clippy --release --all-targets --all-features -- -D warnings
	$(CARGO) build --release
	@$(MAKE) --no-print-directory meson-check
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) test --release --doc"; $(CARGO) test --release --doc; \
		echo "$(CARGO) nextest run --release"; $(CARGO) nextest run --release; \
	else \
		echo "$(CARGO) test --release"; $(CARGO) test --release; \
	fi

# Benchmarks print their tables (markdown) with ratios against a baseline measured in the same run.
bench: deps
	@scripts/setup-bench.sh
	$(CARGO) bench

bench-adaptivequeue: deps
	$(CARGO) bench --bench adaptivequeue

bench-framesync: deps
	$(CARGO) bench --bench framesync

bench-raftsink: deps
	$(CARGO) bench --bench raftsink

bench-objecttracker: deps
	@scripts/setup-bench.sh
	$(CARGO) bench --bench objecttracker

bench-videoaitrace: deps
	$(CARGO) bench --bench videoaitrace

bench-onnxinfer: deps
	@scripts/setup-bench.sh
	$(CARGO) bench --bench onnxinfer

# The meson build (meson.build drives cargo, one option per element): set up and compiled
# once, reusing cargo's target/ (nothing is rebuilt after `cargo build --release`).
meson-check: deps
	rm -rf build-meson
	meson setup build-meson >/dev/null
	meson compile -C build-meson
	test -f build-meson/libgstvideoai.so && test -x build-meson/videoai-events
	rm -rf build-meson

install: build
	install -d $(PLUGIN_INSTALL_DIR) $(BIN_INSTALL_DIR)
	install -m 644 $(RELEASE_DIR)/libgstvideoai.so $(PLUGIN_INSTALL_DIR)/
	install -m 755 $(RELEASE_DIR)/videoai-events $(BIN_INSTALL_DIR)/
	@echo "installed: $(PLUGIN_INSTALL_DIR)/libgstvideoai.so, $(BIN_INSTALL_DIR)/videoai-events"

clean:
	$(CARGO) clean
	rm -rf samples $(EVENTS) $(EVENTS)-wal $(EVENTS)-shm
