//! The layering of the configuration sources.
