//! Service groups across the ring: the same service on many supervisors, named
//! `SERVICE.GROUP[@ORG]` as Habitat names them.

pub mod census;
pub mod follow;
pub mod name;
pub mod payload;
pub mod publish;

pub use name::{GroupNameError, ServiceGroup};
