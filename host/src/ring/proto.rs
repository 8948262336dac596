//! prost messages generated from host/proto/ring.proto by build.rs.
#![allow(clippy::all, missing_docs)]
include!(concat!(env!("OUT_DIR"), "/warren.ring.rs"));
