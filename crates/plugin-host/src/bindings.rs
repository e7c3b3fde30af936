//! Host bindings generated from `sdk/wit/plugin.wit`, one module per world.
//! The shared interfaces (types and host imports) are generated once, in
//! `route`, and reused by the other two.

pub(crate) mod route {
    wasmtime::component::bindgen!({
        world: "route-plugin",
        path: "../../sdk/wit",
        imports: { default: trappable },
    });
}

pub(crate) mod filter {
    wasmtime::component::bindgen!({
        world: "filter-plugin",
        path: "../../sdk/wit",
        imports: { default: trappable },
        with: {
            "switchyard:plugin/types": super::route::switchyard::plugin::types,
            "switchyard:plugin/log": super::route::switchyard::plugin::log,
            "switchyard:plugin/clock": super::route::switchyard::plugin::clock,
            "switchyard:plugin/kv": super::route::switchyard::plugin::kv,
            "switchyard:plugin/metrics": super::route::switchyard::plugin::metrics,
        },
    });
}

pub(crate) mod pick {
    wasmtime::component::bindgen!({
        world: "pick-plugin",
        path: "../../sdk/wit",
        imports: { default: trappable },
        with: {
            "switchyard:plugin/types": super::route::switchyard::plugin::types,
            "switchyard:plugin/log": super::route::switchyard::plugin::log,
            "switchyard:plugin/clock": super::route::switchyard::plugin::clock,
            "switchyard:plugin/kv": super::route::switchyard::plugin::kv,
            "switchyard:plugin/metrics": super::route::switchyard::plugin::metrics,
        },
    });
}
