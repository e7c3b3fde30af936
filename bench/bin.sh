# Shared by the benchmark scripts; source it after `cd` to the repository
# root with ROOT set. Sets BIN to the switchyard binary: SWITCHYARD_BIN if
# set, else target/release/switchyard if present, else
# target/debug/switchyard; exits when it is missing.

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

# The nodes run without the access log, as nginx runs with `access_log off`
# in the comparison; everything else logs as by default.
export SWITCHYARD_LOG=${SWITCHYARD_LOG:-info,fjall=warn,lsm_tree=warn,switchyard::access=off}
