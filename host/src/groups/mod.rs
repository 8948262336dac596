//! Service groups across the ring: the same service on many supervisors, named
//! `SERVICE.GROUP[@ORG]` as Habitat names them.
//!
//! - [`name`]: the one parser of group names; [`payload`]: what a config or file may be.
//! - [`inbox`]: which gossiped configs and files to apply (pure); [`apply`]: the task that
//!   feeds it from the ring and hands its decisions to the services; [`metrics`]: its counters.

pub mod apply;
pub mod census;
pub mod follow;
pub mod inbox;
pub mod metrics;
pub mod name;
pub mod payload;
pub mod publish;

pub use name::{GroupNameError, ServiceGroup};
