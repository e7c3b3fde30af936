//! The export macros and the per-instance plugin slot behind them.

use std::cell::UnsafeCell;

/// Holds the plugin value of one component instance.
///
/// The contract's exports are free functions, so the value created by
/// `init` lives in a `static` that each export macro defines.
#[doc(hidden)]
pub struct Instance<T>(UnsafeCell<Option<T>>);

// SAFETY: a component instance is single-threaded (`wasm32` without the
// `atomics` feature has no threads) and the component model forbids
// re-entering an instance, so the cell is never accessed concurrently nor
// re-entrantly.
#[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
unsafe impl<T> Sync for Instance<T> {}

impl<T> Instance<T> {
    /// An empty slot.
    #[allow(clippy::new_without_default)]
    pub const fn new() -> Self {
        Instance(UnsafeCell::new(None))
    }

    /// Runs the plugin's constructor and stores its value, replacing any
    /// earlier one.
    pub fn init(&self, config: String, new: fn(&str) -> Result<T, String>) -> Result<(), String> {
        report_panics();
        let value = new(&config)?;
        // SAFETY: see the `Sync` impl; no reference into the cell is alive.
        unsafe { *self.0.get() = Some(value) };
        Ok(())
    }

    /// Runs `f` on the stored value; traps if `init` has not succeeded.
    #[inline]
    pub fn with<R>(&self, hook: &str, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: see the `Sync` impl; this is the only live reference.
        match unsafe { &mut *self.0.get() } {
            Some(value) => f(value),
            None => not_initialised(hook),
        }
    }
}

/// Sends panic messages to the node's log (error level) instead of stderr,
/// which a node does not provide: the node then shows the message with the
/// failed call.
fn report_panics() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::log::error(&format!("panicked: {info}"));
            }));
        });
    }
}

#[cold]
#[inline(never)]
fn not_initialised(hook: &str) -> ! {
    panic!("switchyard plugin: `{hook}` was called before `lifecycle.init` succeeded")
}

/// Exports a [`Route`](crate::Route) implementation as the component's
/// `route` hook.
///
/// Call it once, at the top level of the plugin crate (a `cdylib`), with
/// the implementing type: `export_route!(MyPlugin);`. On targets other than
/// `wasm32` it only checks that the type implements the trait.
#[macro_export]
macro_rules! export_route {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SWITCHYARD_PLUGIN: $crate::__private::Instance<$ty> =
                $crate::__private::Instance::new();

            struct __SwitchyardExport;

            impl $crate::__private::LifecycleGuest for __SwitchyardExport {
                fn init(
                    config: $crate::__private::String,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    __SWITCHYARD_PLUGIN.init(config, <$ty as $crate::Route>::new)
                }
            }

            impl $crate::__private::RouteGuest for __SwitchyardExport {
                fn route(msg: $crate::Message) -> $crate::__private::RawRouteDecision {
                    $crate::__private::route_decision(
                        __SWITCHYARD_PLUGIN
                            .with("route", |p| <$ty as $crate::Route>::route(p, msg)),
                    )
                }
            }

            $crate::__private::lifecycle::export!(
                __SwitchyardExport with_types_in $crate::__private::lifecycle
            );
            $crate::__private::route::export!(
                __SwitchyardExport with_types_in $crate::__private::route
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __switchyard_check<T: $crate::Route>() {}
            let _ = __switchyard_check::<$ty>;
        };
    };
}

/// Exports a [`Filter`](crate::Filter) implementation as the component's
/// `filter` hook.
///
/// Call it once, at the top level of the plugin crate (a `cdylib`), with
/// the implementing type: `export_filter!(MyPlugin);`. On targets other than
/// `wasm32` it only checks that the type implements the trait.
#[macro_export]
macro_rules! export_filter {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SWITCHYARD_PLUGIN: $crate::__private::Instance<$ty> =
                $crate::__private::Instance::new();

            struct __SwitchyardExport;

            impl $crate::__private::LifecycleGuest for __SwitchyardExport {
                fn init(
                    config: $crate::__private::String,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    __SWITCHYARD_PLUGIN.init(config, <$ty as $crate::Filter>::new)
                }
            }

            impl $crate::__private::FilterGuest for __SwitchyardExport {
                fn filter(msg: $crate::Message) -> $crate::FilterDecision {
                    __SWITCHYARD_PLUGIN.with("filter", |p| <$ty as $crate::Filter>::filter(p, msg))
                }
            }

            $crate::__private::lifecycle::export!(
                __SwitchyardExport with_types_in $crate::__private::lifecycle
            );
            $crate::__private::filter::export!(
                __SwitchyardExport with_types_in $crate::__private::filter
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __switchyard_check<T: $crate::Filter>() {}
            let _ = __switchyard_check::<$ty>;
        };
    };
}

/// Exports a [`Pick`](crate::Pick) implementation as the component's `pick`
/// hook.
///
/// Call it once, at the top level of the plugin crate (a `cdylib`), with
/// the implementing type: `export_pick!(MyPlugin);`. On targets other than
/// `wasm32` it only checks that the type implements the trait.
#[macro_export]
macro_rules! export_pick {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            static __SWITCHYARD_PLUGIN: $crate::__private::Instance<$ty> =
                $crate::__private::Instance::new();

            struct __SwitchyardExport;

            impl $crate::__private::LifecycleGuest for __SwitchyardExport {
                fn init(
                    config: $crate::__private::String,
                ) -> ::core::result::Result<(), $crate::__private::String> {
                    __SWITCHYARD_PLUGIN.init(config, <$ty as $crate::Pick>::new)
                }
            }

            impl $crate::__private::PickGuest for __SwitchyardExport {
                fn pick(
                    msg: $crate::Message,
                    candidates: ::std::vec::Vec<$crate::Candidate>,
                ) -> ::core::option::Option<u32> {
                    __SWITCHYARD_PLUGIN
                        .with("pick", |p| <$ty as $crate::Pick>::pick(p, msg, &candidates))
                }
            }

            $crate::__private::lifecycle::export!(
                __SwitchyardExport with_types_in $crate::__private::lifecycle
            );
            $crate::__private::pick::export!(
                __SwitchyardExport with_types_in $crate::__private::pick
            );
        };

        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            fn __switchyard_check<T: $crate::Pick>() {}
            let _ = __switchyard_check::<$ty>;
        };
    };
}
