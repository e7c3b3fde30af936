//! Core types of Switchyard: topics, patterns, messages, ids, cursors and
//! hybrid logical clock timestamps.
//!
//! This crate does no I/O: it holds the data model that every other crate
//! shares, the parsing and validation rules for names that arrive from the
//! network, and the compact encodings (cursor strings, varints) that must be
//! identical on every node. It deliberately knows nothing about storage,
//! HTTP or gossip.
//!
//! ```
//! use switchyard_model::{Topic, TopicPattern};
//! let pattern: TopicPattern = "orders.*.created".parse().unwrap();
//! assert!(pattern.matches(&"orders.eu.created".parse::<Topic>().unwrap()));
//! assert!(!pattern.matches(&"orders.eu.west.created".parse::<Topic>().unwrap()));
//! ```
#![warn(missing_docs)]

mod cursor;
mod error;
pub mod histogram;
mod hlc;
mod message;
mod topic;
pub mod varint;

pub use cursor::Cursor;
pub use error::ModelError;
pub use hlc::{Hlc, Timestamp};
pub use message::{Header, IDEMPOTENCY_HEADER, Message, MessageId, NodeId, limits};
pub use topic::{Topic, TopicPattern, TopicSet};
