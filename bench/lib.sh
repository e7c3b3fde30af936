# Shared by the cluster benchmarks (bench/gossip.sh, bench/cluster.sh);
# source it after `cd` to the repository root with ROOT set.
#
# Sets BIN to the switchyard binary: SWITCHYARD_BIN if set, else
# target/release/switchyard if present, else target/debug/switchyard; exits
# when it is missing or predates cluster membership. Creates WORK (a
# temporary folder removed on exit) and PIDS (processes stopped by cleanup
# and on exit), sets a fresh cluster key, and defines start_node and alive.

# shellcheck source=bench/bin.sh
. "$ROOT/bench/bin.sh"
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

# A fresh random key per run; the environment keeps it out of process lists.
SWITCHYARD_CLUSTER_KEY=$(head -c 32 /dev/urandom | base64)
export SWITCHYARD_CLUSTER_KEY

# Starts a node in $WORK/$1 (ports picked by the kernel, fsync $FSYNC,
# default never), joining through gossip address $2 if given; sets
# NODE_URL and NODE_PID.
start_node() {
    local dir=$WORK/$1 seed=${2:-}
    mkdir -p "$dir"
    local args=(serve --listen 127.0.0.1:0 --data-dir "$dir/data" --fsync "${FSYNC:-never}"
                --gossip-listen 127.0.0.1:0)
    [ -z "$seed" ] || args+=(--join "$seed")
    "$BIN" "${args[@]}" >"$dir/out" 2>"$dir/log" &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    local i
    for i in $(seq 200); do
        if grep -q 'listening on' "$dir/out" 2>/dev/null; then
            NODE_URL=$(sed -n 's/.*listening on //p' "$dir/out" | head -1)
            return
        fi
        sleep 0.05
    done
    echo "error: node $1 did not start; see $dir/log" >&2
    cat "$dir/log" >&2
    exit 1
}

# Number of members a node sees alive (0 when it does not answer).
alive() {
    curl -fsS "$1/v1/cluster" 2>/dev/null |
        python3 -c 'import json,sys; print(sum(m["state"] == "alive" for m in json.load(sys.stdin)["members"]))' 2>/dev/null ||
        echo 0
}
