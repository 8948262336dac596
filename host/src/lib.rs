//! warren: a supervisor for fleets of services, extensible with WebAssembly plugins.
pub mod admission;
pub mod cli;
pub mod clock;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod ctl;
pub mod election;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod groups;
pub mod http;
pub mod plugins;
pub mod ring;
pub mod secret;
pub mod services;
pub mod sup;
pub mod watch;
