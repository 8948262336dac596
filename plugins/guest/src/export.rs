//! `credential_source!`: generates the contract's bindings in the calling crate and exports a
//! [`CredentialSource`](crate::CredentialSource) through them, converting the typed results.

/// Export `$ty: CredentialSource` as the plugin, with bindings generated from the WIT folder
/// `wit` next to the crate's Cargo.toml (or `wit = "PATH"`). The crate must depend on
/// `wit-bindgen` (the generated code names it).
///
/// ```text
/// warren_plugin_guest::credential_source!(MySource);
/// warren_plugin_guest::credential_source!(MySource, wit = "../../wit");
/// ```
#[macro_export]
macro_rules! credential_source {
    ($ty:ty) => {
        $crate::credential_source!($ty, wit = "wit");
    };
    ($ty:ty, wit = $wit:literal) => {
        #[doc(hidden)]
        #[allow(clippy::all)]
        mod __warren_bindings {
            wit_bindgen::generate!({ path: $wit, world: "credential-source" });
        }

        #[doc(hidden)]
        fn __warren_log(level: $crate::log::Level, message: &str, fields: &[(&str, &str)]) {
            use __warren_bindings::warren::plugin::host::{Level, log};
            let level = match level {
                $crate::log::Level::Trace => Level::Trace,
                $crate::log::Level::Debug => Level::Debug,
                $crate::log::Level::Info => Level::Info,
                $crate::log::Level::Warn => Level::Warn,
                $crate::log::Level::Error => Level::Error,
            };
            let fields: Vec<(String, String)> =
                fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            log(level, message, &fields);
        }

        #[doc(hidden)]
        struct __WarrenCredentialSource;

        impl __warren_bindings::exports::warren::plugin::credentials::Guest for __WarrenCredentialSource {
            fn schemes() -> Vec<String> {
                $crate::log::set_sink(__warren_log);
                <$ty as $crate::CredentialSource>::SCHEMES.iter().map(|s| s.to_string()).collect()
            }

            fn resolve(
                reference: String,
            ) -> Result<
                __warren_bindings::warren::plugin::types::Credential,
                __warren_bindings::warren::plugin::types::CredentialError,
            > {
                use __warren_bindings::warren::plugin::types::{Credential, CredentialError};
                $crate::log::set_sink(__warren_log);
                match $crate::resolve_with::<$ty>(&reference) {
                    Ok(c) => {
                        let (value, ttl_seconds, watch_paths) = c.into_parts();
                        Ok(Credential { value, ttl_seconds, watch_paths })
                    }
                    Err(e) => {
                        let m = e.message().to_string();
                        Err(match e.kind() {
                            $crate::ErrorKind::NotFound => CredentialError::NotFound(m),
                            $crate::ErrorKind::Denied => CredentialError::Denied(m),
                            $crate::ErrorKind::InvalidReference => CredentialError::InvalidReference(m),
                            $crate::ErrorKind::Unavailable => CredentialError::Unavailable(m),
                        })
                    }
                }
            }
        }

        __warren_bindings::export!(__WarrenCredentialSource with_types_in __warren_bindings);
    };
}
