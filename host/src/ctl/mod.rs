//! The control gateway (default 127.0.0.1:9632): Habitat's ctl framing and messages, one
//! request per connection with streamed replies, authenticated by the ctl secret. A request
//! may carry a body of any size after it in chunk frames (`PkgInstall`: see [`server::Upload`]).
//!
//! - [`protocol`]: frames (Habitat's exact bit layout), [`CtlRequest`], [`Reply`].
//! - [`proto`]: the messages (host/proto/ctl.proto; Habitat's names and field numbers).
//! - [`noise`]: warren's handshake and encrypted records (the secret never crosses the wire).
//! - [`server`]: [`serve`] with a [`CtlHandler`]; [`client`]: [`CtlClient`].
//! - [`secret`]: `CTL_SECRET`, and where the client finds one; [`cli_toml`]: the client's
//!   settings file (`warren cli setup`).
//! - [`metrics`]: counters for `/metrics`.

pub mod cli_toml;
pub mod client;
pub mod metrics;
pub mod noise;
pub mod proto;
pub mod protocol;
pub mod secret;
pub mod server;

pub use client::{ClientError, CtlClient, HandshakeKind, Session};
pub use metrics::CtlMetrics;
pub use protocol::{CtlRequest, Frame, Reply, Txn};
pub use secret::CtlSecret;
pub use server::{
    CtlHandler, Disconnected, PlaintextPolicy, ReplySink, ServerConfig, Upload, UploadError, serve,
};

#[cfg(test)]
mod tests;
