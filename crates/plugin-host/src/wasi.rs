//! The few WASI 0.2 functions a plugin may use, and traps for the rest.
//!
//! A component built for `wasm32-wasip2` imports WASI interfaces through
//! the Rust standard library even when it never uses them (stdio, exit,
//! environment, streams). The host gives plugins only what cannot reach
//! outside the sandbox: random numbers (the standard library's `HashMap`
//! seeds itself from `wasi:random/insecure-seed`) and clocks. Every other
//! WASI function is defined to trap when called: a plugin that prints,
//! reads the environment or exits fails that call, and nothing else
//! happens. Nothing here blocks or needs an async runtime.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use wasmtime::component::{Component, ComponentType, Lift, Linker, Lower};
use wasmtime::{Engine, Result};

use crate::host::HostState;

/// Most random bytes per call.
const MAX_RANDOM_BYTES: u64 = 64 * 1024;

/// `wasi:clocks/wall-clock.datetime`.
#[derive(ComponentType, Lift, Lower, Clone, Copy)]
#[component(record)]
struct Datetime {
    seconds: u64,
    nanoseconds: u32,
}

fn random_bytes(len: u64) -> Result<Vec<u8>> {
    if len > MAX_RANDOM_BYTES {
        wasmtime::bail!("asked for {len} random bytes; at most {MAX_RANDOM_BYTES} per call");
    }
    let mut buf = vec![0; len as usize];
    getrandom::fill(&mut buf).map_err(|e| wasmtime::format_err!("random source: {e}"))?;
    Ok(buf)
}

fn random_u64() -> Result<u64> {
    let mut b = [0; 8];
    getrandom::fill(&mut b).map_err(|e| wasmtime::format_err!("random source: {e}"))?;
    Ok(u64::from_le_bytes(b))
}

/// A fast, non-cryptographic generator for the `insecure` interfaces.
fn insecure_u64() -> u64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = random_u64().unwrap_or(0x9e37_79b9_7f4a_7c15) | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    x
}

/// Nanoseconds since the first call: the plugins' monotonic clock.
pub(crate) fn monotonic_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A linker for one component: the shared linker plus the WASI functions
/// it imports, under the exact names (and versions) it imports them, and
/// traps for every other import.
pub(crate) fn link(
    base: &Linker<HostState>,
    engine: &Engine,
    component: &Component,
) -> Result<Linker<HostState>> {
    let mut linker = base.clone();
    let names: Vec<String> = component
        .component_type()
        .imports(engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    for name in &names {
        let iface = name.split('@').next().unwrap_or(name);
        match iface {
            "wasi:random/insecure-seed" => {
                linker.instance(name)?.func_wrap("insecure-seed", |_, ()| {
                    Ok(((insecure_u64(), insecure_u64()),))
                })?;
            }
            "wasi:random/insecure" => {
                let mut i = linker.instance(name)?;
                i.func_wrap("get-insecure-random-u64", |_, ()| Ok((insecure_u64(),)))?;
                i.func_wrap("get-insecure-random-bytes", |_, (len,): (u64,)| {
                    if len > MAX_RANDOM_BYTES {
                        wasmtime::bail!("asked for {len} random bytes; at most {MAX_RANDOM_BYTES}");
                    }
                    let bytes: Vec<u8> = (0..len).map(|_| insecure_u64() as u8).collect();
                    Ok((bytes,))
                })?;
            }
            "wasi:random/random" => {
                let mut i = linker.instance(name)?;
                i.func_wrap("get-random-u64", |_, ()| Ok((random_u64()?,)))?;
                i.func_wrap("get-random-bytes", |_, (len,): (u64,)| {
                    Ok((random_bytes(len)?,))
                })?;
            }
            "wasi:clocks/monotonic-clock" => {
                let mut i = linker.instance(name)?;
                i.func_wrap("now", |_, ()| Ok((monotonic_ns(),)))?;
                i.func_wrap("resolution", |_, ()| Ok((1u64,)))?;
            }
            "wasi:clocks/wall-clock" => {
                let mut i = linker.instance(name)?;
                i.func_wrap("now", |_, ()| {
                    let d = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    Ok((Datetime {
                        seconds: d.as_secs(),
                        nanoseconds: d.subsec_nanos(),
                    },))
                })?;
                i.func_wrap("resolution", |_, ()| {
                    Ok((Datetime {
                        seconds: 0,
                        nanoseconds: 1,
                    },))
                })?;
            }
            _ => {}
        }
    }
    linker.define_unknown_imports_as_traps(component)?;
    Ok(linker)
}
