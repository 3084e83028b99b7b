#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Tries videoai as installed, the way a machine without the source tree has it (run by
# `make install-check`, the last step of `make test`, after `make build`):
#   1. make install per user (HOME pointed at a scratch directory): found without
#      GST_PLUGIN_PATH;
#   2. make install PREFIX=/usr/local DESTDIR=<stage>, with GST_PLUGIN_PATH at the staged
#      plugin directory;
#   3. the .deb (make deb), installed with dpkg -i into this machine, then dpkg -r.
# Each with the source tree's .deps and target moved out of reach (and put back at exit), from
# another directory, with a registry of its own: gst-inspect-1.0 onnxinfer and a real pipeline
# (videotestsrc ! onnxinfer on the text demo model ! raftsink) work, onnxinfer's log says it
# loaded the ONNX Runtime installed with the plugin, and uninstalling leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
SRC=$PWD
. scripts/versions.env
say() { printf '[install-check] %s\n' "$*"; }
fail() { printf '[install-check] FAILED: %s\n' "$*" >&2; exit 1; }
as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
        fail "need root for: $* (no sudo found)"
    fi
}

WORK=$(mktemp -d /tmp/videoai-install-check.XXXXXX)
AWAY=$SRC/.install-check-away
moved=""
restore() {
    if [ -n "$moved" ]; then
        for d in .deps target; do
            [ -e "$AWAY/$d" ] && mv "$AWAY/$d" "$SRC/$d"
        done
        rmdir "$AWAY" 2>/dev/null || true
        moved=""
    fi
}
cleanup() {
    restore
    if [ -n "${deb_installed:-}" ]; then as_root dpkg -r gst-plugin-videoai >/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The model and the tools' inputs live outside the source tree for the runs.
cp models/common_det.onnx models/common_det.labels "$WORK/"
out_of_reach() {
    mkdir -p "$AWAY"
    moved=1
    for d in .deps target; do
        if [ -e "$SRC/$d" ] || [ -L "$SRC/$d" ]; then mv "$SRC/$d" "$AWAY/$d"; fi
    done
    [ ! -e "$SRC/.deps" ] && [ ! -e "$SRC/target" ] || fail "could not move .deps and target away"
}

# Runs the two checks in $WORK/run (a directory of its own), with environment "$@" added.
# $1: the ONNX Runtime onnxinfer must say it loaded; the rest: VAR=VALUE for env.
try_installed() {
    local want=$1; shift
    local run=$WORK/run
    rm -rf "$run" && mkdir -p "$run"
    (
        cd "$run"
        export GST_REGISTRY=$run/registry.bin
        unset GST_PLUGIN_PATH GST_PLUGIN_SYSTEM_PATH ORT_DYLIB_PATH XDG_DATA_HOME
        [ $# -eq 0 ] || export "$@"
        gst-inspect-1.0 onnxinfer > inspect.txt 2>&1 || { cat inspect.txt >&2; fail "gst-inspect-1.0 onnxinfer"; }
        file=$(sed -n 's/^ *Filename *//p' inspect.txt | head -n 1)
        say "  gst-inspect-1.0 onnxinfer: found in $file"
        case "$file" in "$SRC"/*) fail "the plugin came from the source tree ($file)" ;; esac
        GST_DEBUG=onnxinfer:4 GST_DEBUG_NO_COLOR=1 gst-launch-1.0 -q videotestsrc num-buffers=5 \
            ! video/x-raw,width=320,height=240 ! onnxinfer model-location=../common_det.onnx \
            labels-location=../common_det.labels ! raftsink location=events.db stream-id=check \
            > launch.txt 2>&1 || { tail -20 launch.txt >&2; fail "the pipeline"; }
        loaded=$(sed -n "s/.*loading ONNX Runtime from '\([^']*\)'.*/\1/p" launch.txt | head -n 1)
        [ -n "$loaded" ] || { tail -20 launch.txt >&2; fail "onnxinfer did not log which ONNX Runtime it loaded"; }
        [ "$(realpath -m "$loaded")" = "$(realpath -m "$want")" ] || fail "loaded $loaded, expected $want"
        say "  pipeline: 5 frames stored; ONNX Runtime loaded from $loaded"
    )
}
events_stored() { # $1: videoai-events to use
    local n
    n=$("$1" stats "$WORK/run/events.db" | awk -F'\t' '$1 == "check" {print $2}')
    [ "$n" = 5 ] || fail "$1 stats: $n events for stream check, expected 5"
    say "  $1 stats: 5 events"
}
left_in() { # files under $1 (not ~/.cache: ONNX Runtime writes a device id under
           # ~/.cache/Microsoft/DeveloperTools when it runs; nothing installed goes there)
    find "$1" -mindepth 1 -not -path "$1/.cache" -not -path "$1/.cache/*" | head -20
}

# --- 1. per user --------------------------------------------------------------------------------
say "1. make install (per user, HOME=$WORK/home)"
HOME_DIR=$WORK/home
mkdir -p "$HOME_DIR"
env -u XDG_DATA_HOME HOME="$HOME_DIR" scripts/install.sh install >/dev/null
out_of_reach
try_installed "$HOME_DIR/.local/share/gstreamer-1.0/videoai/libonnxruntime.so.$ORT_VERSION" HOME="$HOME_DIR"
events_stored "$HOME_DIR/.local/bin/videoai-events"
restore
env -u XDG_DATA_HOME HOME="$HOME_DIR" scripts/install.sh uninstall >/dev/null
[ -z "$(left_in "$HOME_DIR")" ] || { left_in "$HOME_DIR" >&2; fail "make uninstall left files in $HOME_DIR"; }
say "  make uninstall: nothing left"

# --- 2. system prefix, staged -------------------------------------------------------------------
STAGE=$WORK/stage
say "2. make install PREFIX=/usr/local DESTDIR=$STAGE"
scripts/install.sh install /usr/local "$STAGE" >/dev/null
out_of_reach
try_installed "$STAGE/usr/local/lib/videoai/libonnxruntime.so.$ORT_VERSION" \
    GST_PLUGIN_PATH="$STAGE/usr/local/lib/gstreamer-1.0"
events_stored "$STAGE/usr/local/bin/videoai-events"
restore
scripts/install.sh uninstall /usr/local "$STAGE" >/dev/null
[ -z "$(left_in "$STAGE")" ] || { left_in "$STAGE" >&2; fail "make uninstall left files in $STAGE"; }
say "  make uninstall: nothing left"

# --- 3. the Debian package ----------------------------------------------------------------------
say "3. make deb, dpkg -i"
deb=$(scripts/make-deb.sh)
dpkg-deb -f "$deb" Package Version Depends | sed 's/^/[install-check]   /'
as_root dpkg -i "$deb" >/dev/null
deb_installed=1
mapfile -t files < <(dpkg -L gst-plugin-videoai | while read -r f; do [ -d "$f" ] || echo "$f"; done)
say "  ${#files[@]} files installed"
out_of_reach
try_installed "/usr/lib/x86_64-linux-gnu/videoai/libonnxruntime.so.$ORT_VERSION"
events_stored /usr/bin/videoai-events
restore
as_root dpkg -r gst-plugin-videoai >/dev/null
deb_installed=""
for f in "${files[@]}"; do [ ! -e "$f" ] || fail "dpkg -r left $f"; done
[ ! -e /usr/lib/x86_64-linux-gnu/videoai ] || fail "dpkg -r left /usr/lib/x86_64-linux-gnu/videoai"
[ ! -e /usr/share/videoai ] || fail "dpkg -r left /usr/share/videoai"
[ ! -e /usr/share/doc/gst-plugin-videoai ] || fail "dpkg -r left /usr/share/doc/gst-plugin-videoai"
say "  dpkg -r: none of the ${#files[@]} files left"
say "passed"
