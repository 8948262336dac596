//! warren: a supervisor for fleets of services, extensible with WebAssembly plugins.
pub mod cli;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod plugins;
