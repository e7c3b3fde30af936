#!/usr/bin/env bash
# Builds the JavaScript example plugins (plugins/js/route, .../filter) into
# components: plugins/js/target/{route,filter}_js.wasm, or into the
# directory given as the first argument (`--install-only` installs the
# toolchain and builds nothing).
#
# @bytecodealliance/componentize-js (pinned below) is installed from the
# npm registry under ~/.cache/switchyard/guest-js/ when it is missing
# (SWITCHYARD_GUEST_CACHE overrides ~/.cache/switchyard).
set -euo pipefail

VERSION=0.23.0
root=$(cd "$(dirname "$0")/.." && pwd)
cache=${SWITCHYARD_GUEST_CACHE:-$HOME/.cache/switchyard}/guest-js/componentize-js-$VERSION
out=${1:-$root/plugins/js/target}

# One installation at a time: tests build guests in parallel.
mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if [ ! -f "$cache/node_modules/@bytecodealliance/componentize-js/package.json" ]; then
    echo "installing @bytecodealliance/componentize-js $VERSION into $cache" >&2
    rm -rf "$cache"
    mkdir -p "$cache"
    echo '{"private": true}' > "$cache/package.json"
    npm install --prefix "$cache" --no-audit --no-fund --save-exact \
        "@bytecodealliance/componentize-js@$VERSION"
fi
flock -u 9
if [ "${1:-}" = "--install-only" ]; then
    exit 0
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
# build.mjs resolves componentize-js from the cache's node_modules.
cp "$root/plugins/js/build.mjs" "$cache/build.mjs"
for hook in route filter; do
    node "$cache/build.mjs" "$root/plugins/js/$hook/$hook.js" "$hook-plugin" \
        "$out/${hook}_js.wasm" "$root/sdk/wit"
done
