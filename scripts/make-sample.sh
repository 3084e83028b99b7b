#!/usr/bin/env bash
# Makes the demo clip: an H.264 MP4 of large characters drawn by textoverlay at known places.
#   scripts/make-sample.sh OUT.mp4 [WIDTH HEIGHT FRAMES]   make the clip (skipped if OUT exists)
#   scripts/make-sample.sh --places [WIDTH HEIGHT]          print where the text is drawn
# Defaults: 1280x720, 150 frames at 30 fps (5 s). Texts and places come from
# pipelines/sample-text.txt, which the pipeline tests read too.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prints "TEXT PX PY X1 Y1 X2 Y2" per text: drawing offset and the box holding its ink.
places() {
    local width=$1 height=$2
    grep -v '^[[:space:]]*\(#\|$\)' pipelines/sample-text.txt | while read -r text x y; do
        awk -v t="$text" -v x="$x" -v y="$y" -v w="$width" -v h="$height" 'BEGIN {
            s = w / 640; px = int(x * w); py = int(y * h); n = length(t)
            printf "%s %d %d %d %d %d %d\n", t, px, py, px + 3*s, py + 14*s, px + 3*s + 46*s*n, py + 61*s }'
    done
}

if [ "${1:-}" = "--places" ]; then
    places "${2:-1280}" "${3:-720}" | while read -r text px py x1 y1 x2 y2; do
        echo "  '$text' drawn at $px,$py: characters within x $x1..$x2, y $y1..$y2"
    done
    exit 0
fi

out=${1:?usage: make-sample.sh OUT.mp4 [WIDTH HEIGHT FRAMES] | --places [WIDTH HEIGHT]}
width=${2:-1280}; height=${3:-720}; frames=${4:-150}
if [ -s "$out" ]; then echo "[sample] $out: present"; exit 0; fi
mkdir -p "$(dirname "$out")"
overlays=()
while read -r text px py _; do
    overlays+=(! textoverlay "text=$text" "font-desc=Sans Bold 48" halignment=left valignment=top
               xpad=0 ypad=0 "deltax=$px" "deltay=$py")
done < <(places "$width" "$height")
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# openh264enc prints a harmless "cmInitParaError" when drained at EOS: show the log on failure only.
if ! gst-launch-1.0 -q videotestsrc num-buffers="$frames" pattern=solid-color foreground-color=0xff203040 \
    ! "video/x-raw,width=$width,height=$height,framerate=30/1" "${overlays[@]}" \
    ! videoconvert ! video/x-raw,format=I420 ! openh264enc bitrate=4000000 ! h264parse \
    ! mp4mux ! filesink "location=$out.partial" >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
mv "$out.partial" "$out"
echo "[sample] $out: ${width}x${height}, $frames frames of text from pipelines/sample-text.txt"
