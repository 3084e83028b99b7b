#!/usr/bin/env bash
# Runs a pipeline description file from pipelines/ with gst-launch-1.0 -e.
#   scripts/run-pipeline.sh FILE [NAME=VALUE ...] [-- extra gst-launch-1.0 options]
# Lines starting with '#' are comments; ${NAME} placeholders are replaced by the NAME=VALUE
# arguments, or by the environment variable NAME; ${NAME:-DEFAULT} falls back to DEFAULT. An
# unfilled placeholder is an error.
set -euo pipefail
file=${1:?usage: run-pipeline.sh FILE [NAME=VALUE ...] [-- gst-launch options]}
shift
[ -f "$file" ] || { echo "run-pipeline: no such file: $file" >&2; exit 2; }
declare -A vars=()
while [ $# -gt 0 ]; do
    case "$1" in
        --) shift; break ;;
        *=*) vars[${1%%=*}]=${1#*=}; shift ;;
        *) echo "run-pipeline: expected NAME=VALUE, got '$1'" >&2; exit 2 ;;
    esac
done
desc=$(grep -v '^[[:space:]]*#' "$file" | tr '\n' ' ')
while read -r use; do
    [ -n "$use" ] || continue
    inner=${use:2:${#use}-3}
    name=${inner%%:-*}
    if [ -n "${vars[$name]+set}" ]; then value=${vars[$name]}
    elif [ -n "${!name+set}" ]; then value=${!name}
    elif [ "$inner" != "$name" ]; then value=${inner#*:-}
    else echo "run-pipeline: $file needs $name=VALUE" >&2; exit 2
    fi
    desc=${desc//"$use"/"$value"}
done < <(grep -o '\${[A-Za-z_][A-Za-z0-9_]*\(:-[^}]*\)\?}' <<<"$desc" | sort -u)
[ -z "${RUN_PIPELINE_PRINT:-}" ] || { printf '%s\n' "$desc"; exit 0; }
# gst-launch-1.0 wants the description as separate words; split it the way a shell would
# (quotes kept together), without evaluating anything in it.
mapfile -d '' words < <(python3 -c 'import shlex, sys; sys.stdout.write("\0".join(shlex.split(sys.argv[1])))' "$desc")
exec gst-launch-1.0 -e "$@" "${words[@]}"
