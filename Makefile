# videoai: two commands do everything on a fresh Debian 12 machine.
#   make demo   set up what is missing, build, run the object demo (COCO detector, tracker, a
#               counting line, event log) and print its tracks and counts next to the truth
#   make test   set up what is missing, then fmt check, clippy -D warnings and every test
# Other targets: deps (set-up only), build, quantize (an INT8 model calibrated on your camera), install/uninstall (per user, or PREFIX=… DESTDIR=…),
# deb (a Debian package), install-check,
# demo-text (the text detector demo), sample, objects-clip, picture, verify-coco-model,
# bench (all benchmarks; bench-<element> for one), chaos (the chaos run, CHAOS_MINUTES), clean.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo
RELEASE_DIR := $(CURDIR)/target/release
export GST_PLUGIN_PATH := $(RELEASE_DIR)$(if $(GST_PLUGIN_PATH),:$(GST_PLUGIN_PATH))

SAMPLE ?= samples/demo.mp4
MODEL ?= models/common_det.onnx
LABELS ?= models/common_det.labels
EVENTS ?= events.db
OBJECTS_CLIP ?= samples/objects.mp4
COCO_MODEL ?= models/yolov3-tiny.onnx
COCO_LABELS ?= models/coco.labels
# The demo detector quantized to INT8 on the demo clip (make quantize-demo, run by make demo).
COCO_INT8 ?= models/yolov3-tiny-int8.onnx
# make quantize: the model, the source it will watch, calibration frames (as many held back).
SOURCE ?=
FRAMES ?= 32
PROPS ?=
MODEL_TYPE ?= yolov5
QUANTIZE := PYTHONPATH=.deps/onnxruntime:.deps/quantize-py python3 scripts/quantize.py
DEMO_STREAM ?= objects-demo
PREFIX ?=
DESTDIR ?=

.PHONY: all deps deps-gpu build quantize quantize-demo demo demo-text sample objects-clip picture verify-coco-model test meson-check install uninstall deb install-check bench bench-adaptivequeue bench-framesync bench-onnxinfer bench-raftsink bench-videoaitrace bench-objecttracker bench-motiondetect bench-cliprecorder bench-density bench-fleet chaos clean

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

# The object demo's clip: photos moving across the frame (pipelines/objects-clip.json).
objects-clip: deps
	@python3 scripts/objects-clip.py make $(OBJECTS_CLIP)

# README pictures: docs/demo-tracks.png (a frame of the object demo with boxes and track ids)
# and docs/demo-detections.png (the text demo clip's last frame with its detections).
picture: build sample objects-clip
	@scripts/make-picture.sh --tracks $(OBJECTS_CLIP) docs/demo-tracks.png
	@scripts/make-picture.sh $(SAMPLE) docs/demo-detections.png

# An INT8 model calibrated on SOURCE, written only if it agrees with the FP32 one on held-back
# frames (scripts/quantize.py): make quantize MODEL=models/yolov3-tiny.onnx SOURCE=cam.mp4 [FRAMES=32]
# [OUT=…] [MODEL_TYPE=yolov5] [PROPS='iou-threshold=0.2 …' (onnxinfer properties it will run with)].
# OUT defaults to MODEL with -int8 before .onnx.
quantize: build
	@[ -n "$(SOURCE)" ] || { echo "make quantize: set SOURCE=<a video file or URI of the camera the model will watch>" >&2; exit 2; }
	$(QUANTIZE) --model "$(MODEL)" --source "$(SOURCE)" --frames $(FRAMES) --model-type $(MODEL_TYPE) \
		--props "$(PROPS)" --out $(or $(OUT),$(MODEL:.onnx=-int8.onnx))

# The demo's detector in INT8, calibrated on the demo clip: kept once it passed, and a refusal
# kept with its figures ($(COCO_INT8).refused; tried again when scripts/quantize.py is newer,
# or when you delete it).
quantize-demo: build objects-clip
	@if [ -f $(COCO_INT8) ]; then echo "[demo] INT8 model: present ($(COCO_INT8))"; \
	elif [ -f $(COCO_INT8).refused ] && [ $(COCO_INT8).refused -nt scripts/quantize.py ]; then echo "[demo] INT8 model: refused by its check at an earlier run ($(COCO_INT8).refused)"; \
	else echo "[demo] quantizing $(COCO_MODEL) on $(OBJECTS_CLIP) (scripts/quantize.py)"; \
		rc=0; $(QUANTIZE) --model $(COCO_MODEL) --source $(OBJECTS_CLIP) --frames $(FRAMES) --out $(COCO_INT8) \
			--props "iou-threshold=0.2" > $(COCO_INT8).log 2>&1 || rc=$$?; cat $(COCO_INT8).log; \
		if [ $$rc = 0 ]; then rm -f $(COCO_INT8).log $(COCO_INT8).refused; \
		elif [ $$rc = 2 ] && grep -q "INT8 model refused" $(COCO_INT8).log; then mv $(COCO_INT8).log $(COCO_INT8).refused; \
		else echo "[demo] make quantize-demo failed (exit $$rc, not a refusal by the check): see above" >&2; exit $$rc; fi; fi

# Runs pipelines/demo-objects.pipeline. Its events go to $(EVENTS) under stream $(DEMO_STREAM):
# run it again and nothing is stored twice (the counts stay).
demo: build objects-clip quantize-demo
	@if [ -f $(COCO_INT8) ]; then \
		echo "[demo] INT8 yolov3-tiny against FP32 (checked on held-back frames of the clip; ms per inference):"; \
		cat $(COCO_INT8).json; \
	elif [ -f $(COCO_INT8).refused ]; then \
		echo "[demo] INT8 yolov3-tiny against FP32: refused by its check, the demo runs FP32:"; \
		grep -E '^\{|refused' $(COCO_INT8).refused; fi
	@echo "[demo] filesrc ! qtdemux ! h264parse ! avdec_h264 ! onnxinfer (yolov3-tiny, COCO$$([ -f $(COCO_INT8) ] && echo ', INT8')) ! objecttracker lines=… ! raftsink (pipelines/demo-objects.pipeline)"
	@python3 scripts/objects-clip.py truth
	@scripts/run-pipeline.sh pipelines/demo-objects.pipeline INPUT=$(OBJECTS_CLIP) \
		MODEL=$$([ -f $(COCO_INT8) ] && echo $(COCO_INT8) || echo $(COCO_MODEL)) LABELS=$(COCO_LABELS) EVENTS=$(EVENTS) STREAM=$(DEMO_STREAM) \
		LINES="$$(python3 -c 'import json; print(json.load(open("pipelines/objects-clip.json"))["lines"])')" -- -q
	@mkdir -p target/demo
	@$(RELEASE_DIR)/videoai-events tracks $(EVENTS) --stream $(DEMO_STREAM) > target/demo/tracks.jsonl
	@$(RELEASE_DIR)/videoai-events counts $(EVENTS) --stream $(DEMO_STREAM) > target/demo/counts.jsonl
	@python3 scripts/objects-clip.py compare target/demo/tracks.jsonl target/demo/counts.jsonl
	@echo "[demo] a snapshot per track (cliprecorder), its path stored with the track:"
	@python3 -c 'import json,sys; [print("  track %d %-10s %s" % (t["track_id"], t["label"], t.get("snapshot", "-"))) for t in map(json.loads, open(sys.argv[1]))]' target/demo/tracks.jsonl
	@echo "[demo] events in $(EVENTS): target/release/videoai-events tracks|counts|summary $(EVENTS) --stream $(DEMO_STREAM)"

# The text detector demo (ddddocr's common_det.onnx finds the characters textoverlay drew).
demo-text: build sample
	@echo "[demo-text] filesrc ! qtdemux ! h264parse ! avdec_h264 ! onnxinfer ! raftsink (pipelines/demo-cpu.pipeline)"
	@scripts/run-pipeline.sh pipelines/demo-cpu.pipeline \
		INPUT=$(SAMPLE) MODEL=$(MODEL) LABELS=$(LABELS) EVENTS=$(EVENTS) -- -q
	@echo "[demo-text] events in $(EVENTS); summary (target/release/videoai-events summary $(EVENTS)):"
	@$(RELEASE_DIR)/videoai-events summary $(EVENTS)
	@echo "[demo-text] text was drawn at (pipelines/sample-text.txt, top-left of each text box):"
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
	@$(MAKE) --no-print-directory install-check

# The COCO detector's conversion (scripts/darknet2onnx.py) against OpenCV's darknet reader on the
# demo photos: every output row equal within 1e-4.
verify-coco-model: deps
	@scripts/setup-bench.sh
	PYTHONPATH=.deps/bench-py python3 scripts/verify-darknet-onnx.py .deps/darknet/yolov3-tiny.cfg \
		.deps/darknet/yolov3-tiny.weights $(COCO_MODEL) .deps/photos/*.png

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

# Cameras per machine (about 10 minutes; BENCH_SECONDS, BENCH_MAX, BENCH_CONFIGS=abcd):
# benches/density.rs.
bench-density: deps build
	$(CARGO) bench --bench density

bench-motiondetect: deps
	$(CARGO) bench --bench motiondetect

# The recorder's CPU share per camera at 4 Mb/s and its ring against bitrate x pre-roll (BENCH_SECONDS):
bench-cliprecorder: deps
	$(CARGO) bench --bench cliprecorder

bench-videoaitrace: deps
	$(CARGO) bench --bench videoaitrace

bench-fleet: deps
	$(CARGO) bench --bench fleet

# Exactly once under faults: CHAOS_MINUTES (10) of worker, NATS and camera faults on 3 NATS nodes,
# 3 workers and 6 RTSP cameras; per camera: stored twice, off the grid, missing (tests/common/chaos.rs).
CHAOS_MINUTES ?= 10
chaos: deps
	CHAOS_MINUTES=$(CHAOS_MINUTES) $(CARGO) bench --bench chaos

bench-onnxinfer: deps
	@scripts/setup-bench.sh
	$(CARGO) bench --bench onnxinfer

# The meson build (meson.build drives cargo, one option per element): set up and compiled
# once, reusing cargo's target/ (nothing is rebuilt after `cargo build --release`).
meson-check: deps
	rm -rf build-meson
	meson setup build-meson --prefix=/usr/local >/dev/null
	meson compile -C build-meson
	test -f build-meson/libgstvideoai.so && test -x build-meson/videoai-events && test -x build-meson/videoai-worker
	meson install -C build-meson --destdir staged >/dev/null
	@# the layout scripts/install.sh makes: the plugin's private ONNX Runtime in ../videoai
	cd build-meson/staged/usr/local && ls lib/*/gstreamer-1.0/libgstvideoai.so lib/*/videoai/libonnxruntime.so.* \
		bin/videoai-events bin/videoai-worker bin/videoai-fleet share/videoai/pipelines/demo-objects.pipeline share/videoai/scripts/fetch-models.sh
	rm -rf build-meson

# Installing (scripts/install.sh): per user by default; PREFIX=/usr/local (LIBDIR=…) for a
# system prefix, DESTDIR=… to stage. The plugin takes its private ONNX Runtime along.
install: build
	@scripts/install.sh install "$(PREFIX)" "$(DESTDIR)"

uninstall:
	@scripts/install.sh uninstall "$(PREFIX)" "$(DESTDIR)"

# A Debian package (cargo-deb, installed by scripts/make-deb.sh) in target/debian/.
deb: build
	@scripts/make-deb.sh

# What `make test` runs last: make install (per user and staged under a prefix) and the .deb
# (installed with dpkg -i, then removed) each tried with the source tree's .deps and target
# moved out of reach.
install-check: build
	@scripts/check-install.sh

clean:
	$(CARGO) clean
	rm -rf samples $(EVENTS) $(EVENTS)-wal $(EVENTS)-shm
