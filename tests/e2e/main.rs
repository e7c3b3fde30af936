//! End-to-end tests: the real `switchyard` binary, real HTTP on 127.0.0.1,
//! real fjall in temporary directories.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod support;

mod auth;
mod bad_input;
mod cluster;
mod config;
mod crash;
mod faults;
mod groups;
mod hostile;
mod memory;
mod patterns;
mod peer_tamper;
mod plugin_against;
mod plugins;
mod publish;
mod reload;
mod resume;
mod rollout;
mod scaffold_guests;
mod tls;
