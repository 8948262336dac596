//! The gateway's counters, for `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident: $help:literal),* $(,)?) => {
        /// Monotonic counters; share one `Arc<CtlMetrics>` between the server and `/metrics`.
        #[derive(Debug, Default)]
        pub struct CtlMetrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        impl CtlMetrics {
            /// Prometheus text: `warren_ctl_<name>_total` for each counter.
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    out.push_str(&format!(
                        "# HELP warren_ctl_{0}_total {1}\n# TYPE warren_ctl_{0}_total counter\nwarren_ctl_{0}_total {2}\n",
                        stringify!($field), $help, self.$field.load(Ordering::Relaxed),
                    ));
                )*
                out
            }
        }
    };
}

counters!(
    connections: "Connections accepted.",
    accept_errors: "Connections that could not be accepted (e.g. out of descriptors); each backs off.",
    over_capacity: "Connections refused because the concurrent connection cap was reached.",
    noise_handshakes: "Noise handshakes completed.",
    plaintext_handshakes: "Plaintext (Habitat) handshakes accepted.",
    auth_failures: "Handshakes refused for a wrong or missing secret.",
    plaintext_refused: "Plaintext handshakes refused by ctl_plaintext.",
    timeouts: "Connections cut off for not completing a handshake or request in time.",
    bad_frames: "Connections ended by an oversize, undecodable or unexpected frame, or a bad record.",
    requests: "Requests handled.",
    request_errors: "Requests answered with NetErr.",
);

impl CtlMetrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
