//! Services: packages in (authoring, the package store), run as supervised processes with
//! Habitat's lifecycle hooks.
//!
//! - [`package`]: idents (`ORIGIN/NAME/VERSION/RELEASE`), metadata files, the package store
//!   under `{data_path}/pkgs` and its all-or-nothing install; [`plan`]: plan.toml, the source
//!   of `warren pkg build`; [`build`]: a source directory into a signed `.hart`.
//! - [`manager`]: the subsystem (one task owns the loaded services), reached through
//!   [`Services`] commands: load, unload, start, stop, status. Specs in [`spec`]. Its
//!   `gossip` part holds each service group's gossiped config layer and writes its files.
//! - [`state`]: one service's lifecycle, a pure state machine (inputs in, actions out), with
//!   [`backoff`] for restart delays; [`supervisor`] is the task that carries it out.
//! - [`process`]: spawning in a session of its own, pidfds, reattaching after a crash, the
//!   output FIFOs read by [`output`]; [`hooks`]: package hook scripts; [`users`]: svc_user.
//! - [`config`]: the layered config; [`template`]: hooks and `config/` rendered with
//!   Habitat's handlebars names.

pub mod backoff;
pub mod binds;
pub mod build;
pub mod config;
pub mod hooks;
pub mod manager;
pub mod output;
pub mod package;
pub mod plan;
pub mod process;
pub mod spec;
pub mod state;
pub mod supervisor;
pub mod template;
pub mod users;

pub use manager::{LoadRequest, ServiceInfo, Services, ServicesOptions, SvcError};
pub use package::{InstalledPackage, PackageIdent, PackageMeta, PackageStore};
