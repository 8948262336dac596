//! Helpers shared by the integration tests, one file per concern:
//!
//! - `cli`: one-shot `warren` runs with a clean environment, and their outcome (`Run`).
//! - `sup`: long-running `warren sup run` processes on 127.0.0.x or in a network namespace
//!   (ports chosen by the kernel).
//! - `netns`: network namespaces on bridges (root only) for real partitions, `cut`/`heal`.
//! - `ring`: ring timings and multi-member rings built from `sup`.
//! - `keys`: ring and origin keys made with the library.
//! - `keyserver`: a real `warren keyserver run` process and `warren admit` runs against it.
//! - `leader`: leader-follower groups (kv-leader and the signed leader-follower policy), their
//!   census and rendered roles.
//! - `packages`: `warren pkg build` of a source folder (the hello-http example).
//! - `services`: script packages installed straight into a supervisor's store, `svc status`.
//! - `schema`: a JSON Schema validator for the keywords Habitat's gateway schemas use.
//! - `plugins`: the real guest components, one engine per test binary, registries.
//! - `files`, `fixtures`, `rng`, `wait`: small utilities.
//!
//! Every test binary declares `mod support;` and uses part of it; the rest is dead code in that
//! binary, hence the one allow below.
#![allow(dead_code)]

pub mod cli;
pub mod files;
pub mod fixtures;
pub mod groups;
pub mod keys;
pub mod keyserver;
pub mod leader;
pub mod netns;
pub mod packages;
pub mod plugins;
pub mod ring;
pub mod rng;
pub mod schema;
pub mod services;
pub mod sup;
pub mod wait;
