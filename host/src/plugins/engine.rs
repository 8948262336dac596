//! The one wasmtime Engine: component model, pooling allocator, epoch interruption driven by a
//! ticker thread, a shared Linker (WASI p2, wasi:http, `host`) and the on-disk compile cache.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use super::PluginError;
use super::bindings::{v0_1, v0_2};
use super::sandbox::StoreState;
use crate::crypto::sodium::Blake2b256;
use crate::fsutil::{self, Existing};

#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// Where compiled components are cached; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Component instances the pooling allocator keeps slots for (all plugins together).
    pub pool_instances: u32,
    /// The largest linear memory any plugin may get.
    pub max_memory_mb: u32,
    /// Epoch period: deadlines are rounded up to it.
    pub epoch_tick: Duration,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            cache_dir: None,
            pool_instances: 128,
            max_memory_mb: 1024,
            epoch_tick: Duration::from_millis(5),
        }
    }
}

/// Whether a component came from the compile cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

pub struct PluginEngine {
    engine: Engine,
    linker: Linker<StoreState>,
    cache: Option<CompileCache>,
    tick: Duration,
}

impl PluginEngine {
    pub fn new(opts: EngineOptions) -> Result<Arc<Self>, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut pool = PoolingAllocationConfig::default();
        let n = opts.pool_instances.max(4);
        pool.total_component_instances(n)
            .total_core_instances(n * 8)
            .total_memories(n * 2)
            .total_tables(n * 8)
            .max_memories_per_component(4)
            .max_tables_per_component(16)
            .max_core_instances_per_component(32)
            .max_memory_size(opts.max_memory_mb as usize * 1024 * 1024);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // For plugin vendors profiling with `perf`: names the compiled guest functions.
        if std::env::var_os("WARREN_PLUGIN_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(engine_err)?;

        let mut linker = Linker::<StoreState>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker).map_err(engine_err)?;
        // Adds `host` and `types`, which the other two worlds share, at both contract versions
        // (warren:plugin@0.1.0 plugins keep loading).
        v0_2::credential_source::CredentialSource::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;
        v0_1::credential_source::CredentialSource::add_to_linker::<StoreState, HasSelf<StoreState>>(
            &mut linker,
            |s| s,
        )
        .map_err(engine_err)?;

        let cache = match &opts.cache_dir {
            Some(dir) => Some(CompileCache::open(dir, &engine)?),
            None => None,
        };
        let tick = opts.epoch_tick.max(Duration::from_millis(1));
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("warren-epoch".into())
            .spawn(move || {
                // Ends once the engine is gone.
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(tick);
                }
            })
            .map_err(|e| PluginError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Arc::new(PluginEngine { engine, linker, cache, tick }))
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn linker(&self) -> &Linker<StoreState> {
        &self.linker
    }

    /// Epoch ticks for a deadline (rounded up, plus one for the tick in progress).
    pub fn deadline_ticks(&self, timeout: Duration) -> u64 {
        (timeout.as_nanos().div_ceil(self.tick.as_nanos()) as u64).saturating_add(1)
    }

    /// Compiles a component, or loads it from the cache when warren compiled it before.
    /// `digest` is BLAKE2b-256 of `wasm`.
    pub fn compile(&self, wasm: &[u8], digest: &[u8; 32]) -> Result<(Component, CacheOutcome), PluginError> {
        let Some(cache) = &self.cache else {
            return Ok((self.compile_uncached(wasm)?, CacheOutcome::Disabled));
        };
        if let Some(c) = cache.load(&self.engine, digest) {
            return Ok((c, CacheOutcome::Hit));
        }
        let component = self.compile_uncached(wasm)?;
        if let Err(e) = cache.store(digest, &component) {
            tracing::warn!(error = %e, "cannot write the compiled plugin cache");
        }
        Ok((component, CacheOutcome::Miss))
    }

    pub fn compile_uncached(&self, wasm: &[u8]) -> Result<Component, PluginError> {
        Component::new(&self.engine, wasm).map_err(|e| PluginError::Compile(format!("{e:#}")))
    }
}

/// Feeds `Hash` output into BLAKE2b so the engine tag is stable across processes.
struct DigestHasher(Blake2b256);
impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// Compiled components on disk, named `{blake2b of wasm}-{engine tag}.cwasm`.
///
/// Deserializing is unsafe (the file is trusted native code), so only files in a directory
/// owned by us and closed to others are loaded, and only names warren itself writes.
pub struct CompileCache {
    dir: PathBuf,
    engine_tag: String,
}

fn current_uid() -> Option<u32> {
    fs::metadata("/proc/self").ok().map(|m| m.uid())
}

impl CompileCache {
    pub fn open(dir: &Path, engine: &Engine) -> Result<Self, PluginError> {
        let io = |e: std::io::Error| PluginError::Io { path: dir.display().to_string(), source: e };
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(io)?;
        let mut h = DigestHasher(Blake2b256::new());
        std::hash::Hash::hash(&engine.precompile_compatibility_hash(), &mut h);
        let engine_tag = hex::encode(&h.0.finalize()[..8]);
        Ok(CompileCache { dir: dir.to_path_buf(), engine_tag })
    }

    pub fn path_for(&self, digest: &[u8; 32]) -> PathBuf {
        self.dir.join(format!("{}-{}.cwasm", hex::encode(digest), self.engine_tag))
    }

    fn trusted(&self, path: &Path) -> bool {
        let Some(uid) = current_uid() else { return false };
        let (Ok(d), Ok(f)) = (fs::metadata(&self.dir), fs::symlink_metadata(path)) else { return false };
        d.uid() == uid
            && d.mode() & 0o022 == 0
            && f.file_type().is_file()
            && f.uid() == uid
            && f.mode() & 0o022 == 0
    }

    pub fn load(&self, engine: &Engine, digest: &[u8; 32]) -> Option<Component> {
        let path = self.path_for(digest);
        if !path.exists() {
            return None;
        }
        if !self.trusted(&path) {
            tracing::warn!(path = %path.display(), "ignoring a compiled plugin not written by warren (owner or permissions)");
            return None;
        }
        // SAFETY: the file sits in warren's private cache dir (checked above) under the name
        // warren wrote for these exact wasm bytes and this engine's compatibility hash.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding an unusable compiled plugin");
                let _ = fs::remove_file(&path);
                None
            }
        }
    }

    pub fn store(&self, digest: &[u8; 32], component: &Component) -> Result<PathBuf, PluginError> {
        let bytes = component.serialize().map_err(|e| PluginError::Compile(format!("serialize: {e:#}")))?;
        let path = self.path_for(digest);
        fsutil::sweep_leftovers(&self.dir);
        // 0600 from creation: compiled code is loaded only from files closed to others.
        fsutil::write_atomic(&path, &bytes, 0o600, Existing::Replace)
            .map_err(|e| PluginError::Io { path: path.display().to_string(), source: e })?;
        Ok(path)
    }
}
