//! Test support shared by Switchyard's crates and end-to-end tests.
//!
//! - [`poll_until`] and [`wait_until`]: wait for a condition that another
//!   task, thread or process brings about, by polling it with a deadline
//!   instead of sleeping a fixed time. A test that times out panics with
//!   what it waited for and the last value it observed.
//! - [`build_guest_plugins`] and [`guest_plugin`]: the WebAssembly
//!   components of the repository's `plugins/` workspace, built once per
//!   test process.
//! - [`disk`]: a size-capped tmpfs that a test fills up.
//!
//! What it does not do: start nodes or open stores. It depends on no
//! Switchyard crate, so that any of them can use it as a dev-dependency
//! without being compiled twice.
//!
//! ```no_run
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//!
//! # async fn example() {
//! let done = AtomicU32::new(0);
//! let n = switchyard_testkit::poll_until(
//!     Duration::from_secs(5),
//!     "three jobs done",
//!     || async { done.load(Ordering::SeqCst) },
//!     |n| *n >= 3,
//! )
//! .await;
//! # }
//! ```
#![warn(missing_docs)]

pub mod disk;
mod guests;
mod wait;

pub use guests::{build_guest_plugins, guest_plugin, repo_root};
pub use wait::{POLL_INTERVAL, poll_until, wait_until};
