#!/usr/bin/env bash
# SPDX-License-Identifier: MPL-2.0
# Installs or uninstalls videoai (run by `make install` and `make uninstall`; build first).
#
#   scripts/install.sh install   [PREFIX] [DESTDIR]
#   scripts/install.sh uninstall [PREFIX] [DESTDIR]
#
# Without PREFIX, per user (what GStreamer searches for the user without GST_PLUGIN_PATH;
# ~/.local/share is $XDG_DATA_HOME when that is set):
#   ~/.local/share/gstreamer-1.0/plugins/libgstvideoai.so     the plugin
#   ~/.local/share/gstreamer-1.0/videoai/                       its private ONNX Runtime
#   ~/.local/bin/videoai-events                                 the tools
#   ~/.local/share/videoai/                                     pipelines/, scripts/ (model fetch)
# With PREFIX (e.g. /usr/local; LIBDIR defaults to PREFIX/lib):
#   LIBDIR/gstreamer-1.0/libgstvideoai.so, LIBDIR/videoai/, PREFIX/bin/, PREFIX/share/videoai/
# DESTDIR stages the whole tree under another root (packaging, tests).
#
# The plugin loads the ONNX Runtime found in `<its directory>/../videoai/` before anything
# else (see plugins/onnxinfer/runtime.rs), so the installed plugin never needs the source tree.
# Every file installed is listed in <share>/videoai/install-manifest.txt; uninstall removes
# exactly those files, then the directories install created if they are empty.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/versions.env

action=${1:?usage: install.sh install|uninstall [PREFIX] [DESTDIR]}
prefix=${2:-}
destdir=${3:-}
if [ -z "$prefix" ]; then
    data=${XDG_DATA_HOME:-$HOME/.local/share}
    plugin_dir=$data/gstreamer-1.0/plugins
    bin_dir=$HOME/.local/bin
    share_dir=$data/videoai
else
    libdir=${LIBDIR:-$prefix/lib}
    plugin_dir=$libdir/gstreamer-1.0
    bin_dir=$prefix/bin
    share_dir=$prefix/share/videoai
fi
ort_dir=$(dirname "$plugin_dir")/videoai
manifest=$share_dir/install-manifest.txt
ORT_SRC=.deps/onnxruntime/onnxruntime
TOOLS=(videoai-events videoai-worker videoai-fleet)

say() { printf '[%s] %s\n' "$action" "$*"; }

case "$action" in
install)
    for f in target/release/libgstvideoai.so "${TOOLS[@]/#/target/release/}" \
             "$ORT_SRC/capi/libonnxruntime.so.$ORT_VERSION"; do
        [ -f "$f" ] || { echo "[install] $f is missing: run 'make build' first" >&2; exit 1; }
    done
    files=()
    created=()
    # Remembers the directories of $1 that do not exist yet (uninstall removes only those).
    note_dirs() {
        local d=$1
        while [ -n "$d" ] && [ "$d" != / ] && [ ! -d "$destdir$d" ]; do
            [[ " ${created[*]} " == *" $d "* ]] || created+=("$d")
            d=$(dirname "$d")
        done
    }
    put() { # put MODE SOURCE DIRECTORY [NAME]
        local dest=$3/${4:-$(basename "$2")}
        note_dirs "$3"
        install -D -m "$1" "$2" "$destdir$dest"
        files+=("$dest")
    }
    put 644 target/release/libgstvideoai.so "$plugin_dir"
    for t in "${TOOLS[@]}"; do put 755 "target/release/$t" "$bin_dir"; done
    put 644 "$ORT_SRC/capi/libonnxruntime.so.$ORT_VERSION" "$ort_dir"
    put 644 "$ORT_SRC/LICENSE" "$ort_dir" LICENSE.onnxruntime
    put 644 "$ORT_SRC/ThirdPartyNotices.txt" "$ort_dir" ThirdPartyNotices.onnxruntime.txt
    for p in pipelines/*; do put 644 "$p" "$share_dir/pipelines"; done
    put 755 scripts/fetch-models.sh "$share_dir/scripts"
    put 755 scripts/darknet2onnx.py "$share_dir/scripts"
    put 644 scripts/versions.env "$share_dir/scripts"
    put 644 scripts/pypi.sh "$share_dir/scripts"
    files+=("$manifest")
    { printf '%s\n' "${files[@]}"; printf 'dir:%s\n' "${created[@]}"; } | grep -v '^dir:$' \
        | install -D -m 644 /dev/stdin "$destdir$manifest"
    say "plugin:        $destdir$plugin_dir/libgstvideoai.so"
    say "ONNX Runtime:  $destdir$ort_dir/libonnxruntime.so.$ORT_VERSION (private to the plugin)"
    say "tools:         ${TOOLS[*]/#/$destdir$bin_dir/}"
    say "pipelines:     $destdir$share_dir/pipelines/, models: $destdir$share_dir/scripts/fetch-models.sh DIR"
    say "$((${#files[@]})) files, listed in $destdir$manifest (make uninstall removes them)"
    ;;
uninstall)
    if [ ! -f "$destdir$manifest" ]; then
        echo "[uninstall] nothing to do: no $destdir$manifest" >&2
        exit 0
    fi
    mapfile -t lines < "$destdir$manifest"
    n=0
    for f in "${lines[@]}"; do
        [[ $f == dir:* ]] && continue
        rm -f "$destdir$f"
        n=$((n + 1))
    done
    # The directories install created, deepest first, if nothing else is in them now.
    for d in $(printf '%s\n' "${lines[@]}" | sed -n 's/^dir://p' | sort -r); do
        rmdir --ignore-fail-on-non-empty "$destdir$d"
    done
    say "removed $n files and the directories install created (listed in $destdir$manifest)"
    ;;
*)
    echo "usage: install.sh install|uninstall [PREFIX] [DESTDIR]" >&2
    exit 2
    ;;
esac
