#!/bin/sh
# Builds app.py into a WebAssembly component for the world `@WORLD@` of
# wit/plugin.wit: @WASM@.
#
# componentize-py (pinned below) is installed from PyPI into a virtual
# environment when it is missing: .venv here, or the directory
# COMPONENTIZE_PY_VENV names (to share one between projects).
set -eu

VERSION=@COMPONENTIZE_PY@
cd "$(dirname "$0")"
venv=${COMPONENTIZE_PY_VENV:-.venv}

if [ "$("$venv/bin/componentize-py" --version 2>/dev/null)" != "componentize-py $VERSION" ]; then
    echo "installing componentize-py $VERSION into $venv" >&2
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$VERSION"
fi

mkdir -p dist
"$venv/bin/componentize-py" -d wit -w @WORLD@ componentize -p . app -o @WASM@
