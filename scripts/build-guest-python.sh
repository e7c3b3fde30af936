#!/usr/bin/env bash
# Builds the Python example plugins (plugins/python/route, .../filter) into
# components: plugins/python/target/{route,filter}_py.wasm, or into the
# directory given as the first argument (`--install-only` installs the
# toolchain and builds nothing).
#
# componentize-py (pinned below) is installed from PyPI into a virtual
# environment under ~/.cache/switchyard/guest-python/ when it is missing
# (SWITCHYARD_GUEST_CACHE overrides ~/.cache/switchyard).
set -euo pipefail

VERSION=0.25.1
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SWITCHYARD_GUEST_CACHE:-$HOME/.cache/switchyard}/guest-python/venv-$VERSION
out=${1:-$root/plugins/python/target}

# One installation at a time: tests build guests in parallel.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if [ ! -x "$cache/bin/componentize-py" ]; then
    echo "installing componentize-py $VERSION into $cache" >&2
    rm -rf "$cache"
    python3 -m venv "$cache"
    "$cache/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$VERSION"
fi
flock -u 9
if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi

mkdir -p "$out"
for hook in route filter; do
    "$cache/bin/componentize-py" -d "$root/sdk/wit" -w "$hook-plugin" \
        componentize -p "$root/plugins/python/$hook" app -o "$out/${hook}_py.wasm"
done
