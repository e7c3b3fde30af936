#!/usr/bin/env bash
# Fault injection on a real cluster: builds the node and the harness
# (tests/chaos), installs what the harness needs (iproute2 for network
# namespaces and tc, a C compiler for the fsync fault shim, libfaketime
# for clock jumps, the wasm32-wasip2 target for the plugin the harness
# binds) when it is missing, and runs it. Arguments go to the harness:
#
#   scripts/chaos.sh --profile short --seed 7     # about 1.5 minutes
#   scripts/chaos.sh --profile long --seed 7      # 20 minutes of faults
#   scripts/chaos.sh --profile soak --seed 7      # 10 minutes of 1-2 s pauses under stress-ng:
#                                                 # no node may be declared down
#   scripts/chaos.sh --nodes 3 --fsync always
#
# The harness needs root for its namespaces (10.213.0.0/24, inside them
# only; removed at the end). Without root it runs the nodes on 127.0.0.1
# with faults on processes only, and its summary line says net=loopback.
# It prints the seed and the fault schedule first, one summary line last
# (`chaos: seed=... lost=0 ... result=pass`), and exits 1 on any violation,
# keeping the nodes' logs. The same seed replays the same schedule.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/switchyard/ci-target}"

need=()
command -v ip >/dev/null 2>&1 || need+=(iproute2)
# The fsync fault shim (tests/faults/failsync.c) is built with cc.
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
# Clock jumps step a node's wall clock through libfaketime.
compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null || need+=(libfaketime)
case " $* " in
    *" soak "*) command -v stress-ng >/dev/null 2>&1 || need+=(stress-ng) ;;
esac
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null ||
        { apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }
fi
# The binder binds a plugin built from plugins/ for wasm32-wasip2.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi
cargo build --locked -q -p switchyard -p switchyard-chaos
exec "$CARGO_TARGET_DIR/debug/chaos" --bin "$CARGO_TARGET_DIR/debug/switchyard" "$@"
