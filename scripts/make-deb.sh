#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Builds the Debian package (run by `make deb`, after `make build`) into target/debian/:
#   /usr/lib/x86_64-linux-gnu/gstreamer-1.0/libgstvideoai.so   where Debian's GStreamer looks
#   /usr/lib/x86_64-linux-gnu/videoai/                          its private ONNX Runtime
#   /usr/bin/videoai-events, /usr/share/videoai/{pipelines,scripts}/
#   /usr/share/doc/gst-plugin-videoai/{copyright,third-party-crates.txt}
# with cargo-deb (installed here with `cargo install` at the pinned version if missing), from
# [package.metadata.deb] in Cargo.toml: version from the crate, dependencies found by
# dpkg-shlibdeps (GStreamer runtime libraries, not -dev packages) plus the plugin sets whose
# elements videoai builds pipelines from. Prints the path of the .deb.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.env
if [ "$(cargo deb --version 2>/dev/null | awk '{print $NF}')" != "$CARGO_DEB_VERSION" ]; then
    echo "[deb] installing cargo-deb $CARGO_DEB_VERSION (cargo install)" >&2
    cargo install --quiet --locked cargo-deb --version "$CARGO_DEB_VERSION" >&2
fi
command -v dpkg-shlibdeps >/dev/null || { echo "[deb] dpkg-shlibdeps missing: run scripts/setup.sh (dpkg-dev)" >&2; exit 1; }
mkdir -p target/debian-extra
python3 scripts/third-party-crates.py target/debian-extra/third-party-crates.txt >&2
cargo deb --no-build --no-strip --quiet "$@" >&2
deb=$(ls -t target/debian/*.deb | head -n 1)
echo "[deb] $deb ($(stat -c %s "$deb") bytes)" >&2
echo "$deb"
