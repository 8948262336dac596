//! Service groups across the ring: the same service on many supervisors, named
//! `SERVICE.GROUP[@ORG]` as Habitat names them.

pub mod name;

pub use name::{GroupNameError, ServiceGroup};
