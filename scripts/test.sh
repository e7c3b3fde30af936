#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: checks the toolchain, then
# the gates (rustfmt, and clippy with every warning an error), then builds
# and runs every test of the workspace (unit, store integration, router
# tests in process, plugin host tests on real components, and end-to-end
# tests that start the real binary), then the short fault-injection run
# (scripts/chaos.sh), and the operations tests of tests/ops.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo is not installed; install Rust 1.95 (https://rustup.rs)" >&2
    exit 1
fi
# The plugin tests build real components from plugins/ for wasm32-wasip2;
# the gates need rustfmt and clippy.
installed=$(rustup target list --installed 2>/dev/null || true)
if ! grep -qx wasm32-wasip2 <<<"$installed"; then
    rustup target add wasm32-wasip2
fi
for component in rustfmt clippy; do
    if ! rustup component list --installed 2>/dev/null | grep -q "^$component"; then
        rustup component add "$component"
    fi
done
# An end-to-end test steps a node's wall clock with libfaketime.
if ! compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime >/dev/null ||
            { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libfaketime >/dev/null; }
    else
        echo "error: the tests need libfaketime (Debian package libfaketime); install it" >&2
        exit 1
    fi
fi
# The end-to-end tests open many sockets and files.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# Gates: formatting, then lints (the policy is [workspace.lints] in
# Cargo.toml).
cargo fmt --all -- --check
cargo fmt --manifest-path plugins/Cargo.toml --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

cargo test --workspace --locked "$@"
# The example plugins' own unit tests, run natively with the SDK's
# in-process host functions.
cargo test --manifest-path plugins/Cargo.toml --locked
# Operations tests driven from Python against the real binary: /metrics
# through the Prometheus client's OpenMetrics parser, the OpenAPI
# description through schemathesis, the dashboard in headless Chromium,
# the systemd unit through systemd-analyze (scripts/ops-tests.sh installs
# what they need).
./scripts/ops-tests.sh
# Fault injection, short profile (about 1.5 minutes): five nodes through
# kills, wipes, pauses, partitions and slow links, with a fixed seed
# unless CHAOS_SEED says otherwise.
./scripts/chaos.sh --profile short --seed "${CHAOS_SEED:-1}"
