#!/usr/bin/env bash
# Runs the fuzz targets (fuzz/, cargo-fuzz with libFuzzer) one after the
# other, each for a fixed time, starting from the committed seed corpus
# (fuzz/corpus/<target>/) and the inputs of past crashes
# (fuzz/regressions/<target>/), and prints one summary line per target:
# executions, executions per second, corpus size, coverage (libFuzzer's
# `cov:`) and whether it crashed.
#
#   scripts/fuzz.sh                 # every target, 300 s each (about 35 min with the build)
#   scripts/fuzz.sh 60 topic sse    # two targets, 60 s each
#   nice -n 15 scripts/fuzz.sh 30   # a quick pass on a shared machine
#
# Installs cargo-fuzz when it is missing. cargo-fuzz passes -Z flags, so on
# a stable toolchain the build runs with RUSTC_BOOTSTRAP=1; the sanitizer
# is AddressSanitizer (FUZZ_SANITIZER=none turns it off, for speed).
# Inputs that add coverage are kept in fuzz/corpus-new/<target>/ (not
# committed; the next run starts from them too). A crash leaves its input
# in fuzz/artifacts/<target>/ with the run's log, and the script exits 1
# after the remaining targets ran; docs/operations.md says how to minimise
# it and turn it into a regression test. Nothing listens on the network.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-300}
if ! [[ $seconds =~ ^[0-9]+$ ]] || [ "$seconds" -eq 0 ]; then
    echo "usage: scripts/fuzz.sh [seconds-per-target] [target...]" >&2
    exit 2
fi
shift $(($# > 0 ? 1 : 0))
all=(topic cursor sse cluster_wire config plugin_results)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")
for t in "${targets[@]}"; do
    [ -f "fuzz/fuzz_targets/$t.rs" ] || { echo "error: no fuzz target $t (have: ${all[*]})" >&2; exit 2; }
done

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
# cargo-fuzz builds with -Zsanitizer and other unstable flags.
export RUSTC_BOOTSTRAP=1
target_dir="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/switchyard/fuzz-target}"
sanitizer=${FUZZ_SANITIZER:-address}
build_flags=(--debug-assertions --sanitizer "$sanitizer" --codegen-units 16)
# sse, config and plugin_results need the node's crates (wasmtime, fjall:
# a long build); the others build without them, in a target dir of their
# own so that the two feature sets do not rebuild each other's crates.
features=(--no-default-features)
target_dir="$target_dir-light"
for t in "${targets[@]}"; do
    case $t in
        sse | config | plugin_results) features=() target_dir=${target_dir%-light} ;;
    esac
done
build_flags+=("${features[@]}" --target-dir "$target_dir")

tmp=$(mktemp -d)
child=
cleanup() {
    if [ -n "$child" ]; then kill "$child" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "fuzz: building ${targets[*]} (sanitizer: $sanitizer)"
for t in "${targets[@]}"; do
    cargo fuzz build "${build_flags[@]}" "$t"
done

failed=()
summary=()
for t in "${targets[@]}"; do
    new="fuzz/corpus-new/$t"
    artifacts="fuzz/artifacts/$t"
    mkdir -p "$new" "$artifacts" "fuzz/regressions/$t"
    log="$artifacts/run.log"
    echo "fuzz: $t for ${seconds}s (log: $log)"
    # The first corpus directory receives the new inputs; the committed
    # ones are only read. Regressions replay first, as part of the corpus.
    set +e
    timeout --kill-after=30 $((seconds + 300)) \
        cargo fuzz run "${build_flags[@]}" "$t" "$new" "fuzz/corpus/$t" "fuzz/regressions/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        -artifact_prefix="$artifacts/" >"$log" 2>&1 &
    child=$!
    wait "$child"
    status=$?
    child=
    set -e
    done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
    [ -n "$done_line" ] || done_line=$(grep -E '^#[0-9]+[[:space:]]' "$log" | tail -n 1 || true)
    stat() { grep -E "^stat::$1:" "$log" | tail -n 1 | awk '{print $2}'; }
    execs=$(stat number_of_executed_units)
    rate=$(stat average_exec_per_sec)
    cov=$(sed -nE 's/.*cov: ([0-9]+).*/\1/p' <<<"$done_line")
    corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9]+[a-zA-Z]*).*/\1/p' <<<"$done_line")
    if [ "$status" -eq 0 ]; then
        result=ok
    else
        result="CRASH (exit $status)"
        failed+=("$t")
        grep -E 'panicked at|ERROR: (libFuzzer|AddressSanitizer)|Test unit written to' "$log" | head -n 5 || true
    fi
    summary+=("$(printf '%-15s execs=%-10s exec/s=%-7s corpus=%-12s cov=%-6s %s' \
        "$t" "${execs:-?}" "${rate:-?}" "${corp:-?}" "${cov:-?}" "$result")")
done

echo
echo "fuzz: summary (${seconds}s per target, $(date -u +%Y-%m-%dT%H:%MZ))"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: crashed: ${failed[*]} (inputs in fuzz/artifacts/<target>/)" >&2
    exit 1
fi
