//! The ring: encrypted SWIM membership (foca) and rumor gossip between supervisors.
//!
//! `core` is a pure state machine (no sockets, no clock of its own); `shell` moves its bytes
//! over UDP and TCP with tokio; `persist` keeps the member id, generation and rumors on disk.

pub mod codec;
pub mod config;
pub mod core;
pub mod handler;
pub mod identity;
pub mod inject;
pub mod metrics;
pub mod mirror;
pub mod persist;
pub mod proto;
pub mod rumor;
pub mod shell;
pub mod suspicion;
pub mod wire;

pub use config::RingConfig;
pub use core::{CoreParams, Event, Health, MemberView, Origin, Output, RingCore};
pub use identity::{Ident, MemberId};
pub use rumor::{Rumor, RumorKey, RumorKind, RumorLimits, RumorStore};
pub use shell::{RingHandle, RingStatus};
pub use wire::{KeyInfo, Keyring, Reject};
