//! warren: a supervisor for fleets of services, extensible with WebAssembly plugins.
pub mod cli;
pub mod crypto;
pub mod http;
pub mod ring;
pub mod sup;
