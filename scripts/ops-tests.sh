#!/usr/bin/env bash
# Runs the operations tests in tests/ops against the workspace's debug build
# of the node: each test_*.py starts its own node on 127.0.0.1 with a
# temporary data directory. Installs what they need when it is missing: a
# Python virtual environment with the pinned packages of
# tests/ops/requirements.txt (in $SWITCHYARD_VENV, default
# ~/.cache/switchyard/ops-venv), and Debian's chromium and chromium-driver
# when the dashboard test runs. Pass test file names to run only those.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${SWITCHYARD_VENV:-$HOME/.cache/switchyard/ops-venv}
req=tests/ops/requirements.txt
if [ ! -x "$venv/bin/python" ] || ! cmp -s "$req" "$venv/requirements.txt"; then
    # Debian's own python3 needs python3-venv for this.
    if ! python3 -m venv "$venv" 2>/dev/null; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null ||
                { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
        fi
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
    cp "$req" "$venv/requirements.txt"
fi

if [ -z "${SWITCHYARD_BIN:-}" ]; then
    cargo build -p switchyard --locked --quiet
fi

tests=("$@")
if [ ${#tests[@]} -eq 0 ]; then
    mapfile -t tests < <(ls tests/ops/test_*.py)
fi

# The dashboard test drives Debian's chromium through chromium-driver.
if printf '%s\n' "${tests[@]}" | grep -q dashboard; then
    if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null ||
                { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }
        else
            echo "error: the dashboard test needs Debian's chromium and chromium-driver; install them" >&2
            exit 1
        fi
    fi
fi
status=0
for t in "${tests[@]}"; do
    echo "ops test: $t"
    if ! "$venv/bin/python" "$t"; then
        echo "ops test FAILED: $t" >&2
        status=1
    fi
done
exit $status
