//! The per-store sandbox: WASI context built from the effective policy (and nothing else), the
//! memory limiter, the outbound-HTTP gate and the `host` interface (logging).

use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::Level;
use super::bindings::v0_1::credential_source::warren::plugin::{host as host1, types as types1};
use super::bindings::v0_2::credential_source::warren::plugin::{host, types};
use super::policy::Effective;

/// Log records a plugin may emit per call, and their size, so a plugin cannot flood the log.
const MAX_LOGS_PER_CALL: u32 = 200;
const MAX_LOG_CHARS: usize = 2048;

/// Memory limiter: the total of all linear memories of the store stays under `max_bytes`.
/// `hit` records a refused growth so a resulting trap is reported as memory exhaustion.
pub struct MemoryCap {
    pub max_bytes: usize,
    pub used: usize,
    pub hit: bool,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let extra = desired.saturating_sub(current);
        let total = self.used.saturating_add(extra);
        if total > self.max_bytes || maximum.is_some_and(|m| desired > m) {
            self.hit = true;
            return Ok(false);
        }
        self.used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table element is a pointer; count tables against the same budget roughly.
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        64
    }
    fn tables(&self) -> usize {
        64
    }
    fn memories(&self) -> usize {
        16
    }
}

/// Refuses outbound HTTP to hosts the plugin was not granted; clamps timeouts to the call's.
pub struct HttpGate {
    plugin: Arc<str>,
    allowed: Arc<[String]>,
    timeout: Duration,
}

/// The `host:port` that `default_send_request` will connect to, computed the way it does
/// (the authority as written, `:80`/`:443` appended when it names no port). `None` when there
/// is no authority or it carries userinfo (`x@host`): the host part alone would be checked
/// while the whole string is dialled.
pub fn dialled_authority(uri: &http::Uri) -> Option<String> {
    let auth = uri.authority()?;
    if auth.as_str().contains('@') {
        return None;
    }
    if auth.port().is_some() {
        return Some(auth.as_str().to_string());
    }
    let port = if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 };
    Some(format!("{auth}:{port}"))
}

/// Whether the gate lets a request to `uri` through to one of the `allowed` `host:port`s.
pub fn http_allowed(uri: &http::Uri, allowed: &[String]) -> bool {
    dialled_authority(uri).is_some_and(|a| allowed.iter().any(|h| h.eq_ignore_ascii_case(&a)))
}

impl WasiHttpHooks for HttpGate {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        drop(fut);
        if !http_allowed(request.uri(), &self.allowed) {
            // Userinfo may be a credential: never logged.
            let authority = dialled_authority(request.uri());
            tracing::warn!(plugin = %self.plugin, authority = authority.as_deref().unwrap_or("(none, or with userinfo)"), "refused outbound HTTP to a host not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        let t = self.timeout;
        let clamp = |d: Option<Duration>| Some(d.map_or(t, |d| d.min(t)));
        let mut opts = options.unwrap_or_default();
        opts.connect_timeout = clamp(opts.connect_timeout);
        opts.first_byte_timeout = clamp(opts.first_byte_timeout);
        opts.between_bytes_timeout = clamp(opts.between_bytes_timeout);
        Box::new(async move {
            use http_body_util::BodyExt;
            let (res, io) = wasmtime_wasi_http::default_send_request(request, Some(opts)).await?;
            Ok((res.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// Everything one store holds.
pub struct StoreState {
    pub plugin: Arc<str>,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    gate: HttpGate,
    pub cap: MemoryCap,
    logs_this_call: u32,
}

impl StoreState {
    /// Builds the sandbox from the effective policy only: no inherited env, args, stdio,
    /// network or directories beyond the grant.
    pub fn new(plugin: Arc<str>, policy: &Effective) -> Self {
        let mut b = WasiCtxBuilder::new();
        // Calls are synchronous and already on a thread that may block (never an async worker):
        // do file I/O on it instead of bouncing every WASI call through tokio's blocking pool.
        b.allow_blocking_current_thread(true);
        for name in &policy.env {
            if let Ok(v) = std::env::var(name) {
                b.env(name, &v);
            }
        }
        for dir in &policy.read_paths {
            let guest = dir.to_string_lossy();
            // Opened by its resolved path, and only if that is still inside the grant.
            let real = match policy.confined_read_path(dir) {
                Ok(real) => real,
                Err(why) if dir.exists() => {
                    tracing::warn!(plugin = %plugin, dir = %dir.display(), "granted directory not opened: {why}");
                    continue;
                }
                Err(why) => {
                    // A granted directory that does not exist (yet) is simply not visible.
                    tracing::debug!(plugin = %plugin, dir = %dir.display(), error = %why, "granted directory not preopened");
                    continue;
                }
            };
            if let Err(e) = b.preopened_dir(&real, guest.as_ref(), FsPerms::ReadOnly) {
                tracing::debug!(plugin = %plugin, dir = %dir.display(), error = %e, "granted directory not preopened");
            }
        }
        StoreState {
            gate: HttpGate {
                plugin: plugin.clone(),
                allowed: policy.http_hosts.clone().into(),
                timeout: policy.timeout(),
            },
            plugin,
            wasi: b.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            cap: MemoryCap { max_bytes: policy.memory_bytes(), used: 0, hit: false },
            logs_this_call: 0,
        }
    }

    pub fn begin_call(&mut self) {
        self.logs_this_call = 0;
        self.cap.hit = false;
    }
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for StoreState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.gate }
    }
}

impl types::Host for StoreState {}
impl types1::Host for StoreState {}

/// warren:plugin@0.1.0's `host` is the same function.
impl host1::Host for StoreState {
    fn log(&mut self, level: host1::Level, message: String, fields: Vec<(String, String)>) {
        host::Host::log(self, level.into(), message, fields);
    }
}

impl host::Host for StoreState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        self.logs_this_call += 1;
        if self.logs_this_call > MAX_LOGS_PER_CALL {
            return;
        }
        // Skip the formatting when nobody listens (the common case for debug records).
        let enabled = match level {
            Level::Trace => tracing::enabled!(target: "warren::plugin", tracing::Level::TRACE),
            Level::Debug => tracing::enabled!(target: "warren::plugin", tracing::Level::DEBUG),
            Level::Info => tracing::enabled!(target: "warren::plugin", tracing::Level::INFO),
            Level::Warn => tracing::enabled!(target: "warren::plugin", tracing::Level::WARN),
            Level::Error => tracing::enabled!(target: "warren::plugin", tracing::Level::ERROR),
        };
        if !enabled {
            return;
        }
        let cut = |s: &str| -> String { s.chars().take(MAX_LOG_CHARS).collect() };
        let message = cut(&message);
        let fields = fields
            .iter()
            .take(32)
            .map(|(k, v)| format!("{}={}", cut(k), cut(v)))
            .collect::<Vec<_>>()
            .join(" ");
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(target: "warren::plugin", plugin, %fields, "{message}"),
            Level::Debug => tracing::debug!(target: "warren::plugin", plugin, %fields, "{message}"),
            Level::Info => tracing::info!(target: "warren::plugin", plugin, %fields, "{message}"),
            Level::Warn => tracing::warn!(target: "warren::plugin", plugin, %fields, "{message}"),
            Level::Error => tracing::error!(target: "warren::plugin", plugin, %fields, "{message}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_checks_what_is_dialled() {
        let allowed = vec!["granted:8200".to_string(), "web:80".to_string(), "tls:443".to_string()];
        let ok = |u: &str| http_allowed(&u.parse().unwrap(), &allowed);
        assert!(ok("http://granted:8200/v1/x"));
        assert!(ok("http://GRANTED:8200/"));
        assert!(ok("http://web/"), "the default port of http");
        assert!(ok("https://tls/"), "the default port of https");
        assert!(!ok("https://web/"), "https dials 443, not the granted 80");
        assert!(!ok("http://x@granted:8200/"), "userinfo is refused");
        assert!(!ok("http://user:pw@granted:8200/"));
        assert!(!ok("http://granted:8201/"));
        assert!(!ok("http://evil:8200/"));
        assert!(!ok("/relative"));
        assert_eq!(dialled_authority(&"http://web/".parse().unwrap()).as_deref(), Some("web:80"));
        assert_eq!(dialled_authority(&"http://a@web/".parse().unwrap()), None);
    }
}
