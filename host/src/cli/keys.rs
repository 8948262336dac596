//! Pieces shared by the key commands: the `--cache-key-path` option, generating a key pair
//! without clashing with an existing revision, exporting and importing key files.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Args;

use crate::crypto::cache::{CACHE_KEY_PATH_ENV, default_cache_path};
use crate::crypto::keys::MAX_KEY_FILE_LEN;
use crate::crypto::{BoxSecretKeyFile, CryptoError, KeyCache, KeyFile, KeyKind};

/// `--cache-key-path DIR`, shared by every command that reads or writes keys.
#[derive(Args, Debug, Clone)]
pub struct CacheArgs {
    /// Key cache directory. Defaults to /var/lib/warren/keys for root and $HOME/.warren/keys for
    /// other users.
    #[arg(long, value_name = "DIR", env = CACHE_KEY_PATH_ENV, default_value_os_t = default_cache_path())]
    pub cache_key_path: PathBuf,
}

impl CacheArgs {
    pub fn cache(&self) -> KeyCache {
        KeyCache::new(&self.cache_key_path)
    }
}

/// How many new seconds to try before giving up on a free revision.
const GENERATE_ATTEMPTS: usize = 5;

/// Generates key files with `make` (which stamps them with the current second) and writes them
/// all. If that revision already exists (a key made earlier in the same second), it waits for
/// the next second and tries again, so two quick `generate`s give two revisions instead of an
/// error. The secret file is written first; on a conflict, what this attempt wrote is removed.
pub fn generate_and_write(
    cache: &KeyCache,
    mut make: impl FnMut() -> Result<Vec<KeyFile>, CryptoError>,
) -> anyhow::Result<Vec<(KeyFile, PathBuf)>> {
    for _ in 0..GENERATE_ATTEMPTS {
        let files = make()?;
        let taken = files.iter().any(|f| cache.dir().join(f.file_name()).exists());
        if !taken {
            match write_all(cache, &files) {
                Ok(written) => return Ok(written),
                Err(CryptoError::KeyConflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        sleep_until_next_second();
    }
    bail!(
        "could not find a free key revision after {GENERATE_ATTEMPTS} seconds (another process is generating the same key?)"
    )
}

fn write_all(cache: &KeyCache, files: &[KeyFile]) -> Result<Vec<(KeyFile, PathBuf)>, CryptoError> {
    let mut written: Vec<(KeyFile, PathBuf)> = Vec::new();
    for f in files {
        match cache.write(f) {
            Ok(path) => written.push((f.clone(), path)),
            Err(e) => {
                for (_, path) in &written {
                    let _ = std::fs::remove_file(path);
                }
                return Err(e);
            }
        }
    }
    Ok(written)
}

fn sleep_until_next_second() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let wait = Duration::from_nanos(1_000_000_000 - u64::from(now.subsec_nanos())) + Duration::from_millis(5);
    std::thread::sleep(wait);
}

pub fn print_generated(what: &str, written: &[(KeyFile, PathBuf)]) -> std::io::Result<()> {
    if let Some((first, _)) = written.first() {
        outln!("Generated {what} {}", first.id)?;
    }
    for (file, path) in written {
        outln!("  {:<26} {}", file.kind.describe(), path.display())?;
    }
    Ok(())
}

/// Prints the latest revision of `name` of `kind` on stdout.
pub fn export(cache: &KeyCache, kind: KeyKind, name: &str) -> anyhow::Result<()> {
    let key = cache.latest(kind, name)?;
    let mut out = std::io::stdout().lock();
    out.write_all(key.to_text().as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// Reads one key file from stdin, checks it (and that it is one of `accept`, if given), and
/// writes it to the cache.
pub fn import_from_stdin(cache: &KeyCache, accept: Option<&[KeyKind]>) -> anyhow::Result<()> {
    let mut buf = zeroize::Zeroizing::new(Vec::new());
    std::io::stdin()
        .lock()
        .take(MAX_KEY_FILE_LEN as u64 + 1)
        .read_to_end(&mut buf)
        .context("reading the key from stdin")?;
    if buf.iter().all(u8::is_ascii_whitespace) {
        bail!("no key on stdin: pipe a key file in, e.g. `warren origin key import < KEYFILE`");
    }
    let key = KeyFile::parse(&buf).context("stdin does not hold a valid key file")?;
    if let Some(kinds) = accept
        && !kinds.contains(&key.kind)
    {
        let wanted: Vec<&str> = kinds.iter().map(|k| k.header()).collect();
        bail!(
            "stdin holds a {} ({}), but this command imports {}",
            key.kind.describe(),
            key.kind.header(),
            wanted.join(" or ")
        );
    }
    let path = cache.write(&key).with_context(|| format!("importing {}", key.id))?;
    outln!("Imported {} {} ({}) into {}", key.kind.describe(), key.id, key.kind.header(), path.display())?;
    Ok(())
}

/// Generates a BOX key pair named `name` (a user, or a service group `svc.group@org`).
pub fn generate_box_pair(what: &str, name: &str, cache: &CacheArgs) -> anyhow::Result<()> {
    let written = generate_and_write(&cache.cache(), || {
        let (pk, sk) = BoxSecretKeyFile::generate(name)?;
        Ok(vec![sk.to_file(), pk.to_file()])
    })?;
    print_generated(what, &written)?;
    Ok(())
}
