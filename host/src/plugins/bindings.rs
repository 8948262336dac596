//! Host bindings generated from `wit/` (warren:plugin@0.1.0). The three worlds share one `host`
//! interface so the store implements its `Host` trait once.

pub mod credential_source {
    wasmtime::component::bindgen!({ path: "../wit", world: "credential-source" });
}

pub mod topology_policy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "topology-policy",
        with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
    });
}

pub mod lifecycle_hook {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "lifecycle-hook",
        with: { "warren:plugin/host": super::credential_source::warren::plugin::host },
    });
}

pub use credential_source::warren::plugin::host::Level;
pub use credential_source::warren::plugin::types::{Credential, CredentialError};
pub use lifecycle_hook::exports::warren::plugin::lifecycle::{Health, ServiceContext};
pub use topology_policy::exports::warren::plugin::topology::{Decision, Member, Role};
