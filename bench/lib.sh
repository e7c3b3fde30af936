# Shared by the cluster benchmarks (bench/gossip.sh, bench/cluster.sh);
# source it after `cd` to the repository root with ROOT set.
#
# Sets BIN to the switchyard binary: SWITCHYARD_BIN if set, else
# target/release/switchyard if present, else target/debug/switchyard; exits
# when it is missing or predates cluster membership. Creates WORK (a
# temporary folder removed on exit) and PIDS (processes stopped by cleanup
# and on exit).

BIN=${SWITCHYARD_BIN:-}
if [ -z "$BIN" ]; then
    if [ -x "$ROOT/target/release/switchyard" ]; then
        BIN=$ROOT/target/release/switchyard
    else
        BIN=$ROOT/target/debug/switchyard
    fi
fi
if [ ! -x "$BIN" ]; then
    echo "error: no binary at $BIN; run cargo build --release -p switchyard" >&2
    exit 1
fi
if ! "$BIN" serve --help | grep -q -- --gossip-listen; then
    echo "error: $BIN predates cluster membership; rebuild it" >&2
    exit 1
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap 'cleanup; rm -rf "$WORK"' EXIT
