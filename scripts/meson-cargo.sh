#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Called by meson.build: builds the plugin and the tools (videoai-events, -worker, -fleet) with cargo for the chosen
# elements, then copies both into meson's build directory.
#   meson-cargo.sh <cargo> <source dir> <features, comma-separated> <output dir>
set -euo pipefail
cargo=$1 src=$2 features=$3 out=$4
"$cargo" build --release --manifest-path "$src/Cargo.toml" --target-dir "$src/target" \
    --no-default-features --features "$features"
cp "$src/target/release/libgstvideoai.so" "$src/target/release/videoai-events" \
    "$src/target/release/videoai-worker" "$src/target/release/videoai-fleet" "$out/"
