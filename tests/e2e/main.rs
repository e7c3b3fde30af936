//! End-to-end tests: the real `switchyard` binary, real HTTP on 127.0.0.1,
//! real fjall in temporary directories.

mod support;

mod bad_input;
mod cluster;
mod crash;
mod groups;
mod memory;
mod patterns;
mod plugins;
mod publish;
mod resume;
