//! `warren config apply` and `warren file upload`: one configuration (or file) for every
//! member of a service group, sent through one supervisor's ctl gateway and gossiped to the
//! rest. With `--user` the payload is BOX-1 from the user's secret key to the group's latest
//! public key, so only the group's supervisors can read it.

use std::io::Read as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use zeroize::Zeroizing;

use super::ctl::RemoteSup;
use super::keys::CacheArgs;
use crate::crypto::boxes;
use crate::crypto::{BoxPublicKey, BoxSecretKeyFile, KeyKind};
use crate::ctl::CtlRequest;
use crate::ctl::proto;
use crate::groups::ServiceGroup;
use crate::groups::payload::{self, MAX_PAYLOAD};
use crate::sup::ctl_cfg::group_to_proto;

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Apply a TOML configuration to every member of a service group (the top layer of its
    /// config: above default.toml, the environment and user.toml). VERSION must be above the
    /// group's current one; the supervisor says which that is when it is not.
    Apply(ApplyArgs),
}

#[derive(Subcommand, Debug)]
pub enum FileCommand {
    /// Upload a file into `svc/NAME/files/` of every member of a service group; each runs its
    /// file-updated hook. VERSION must be above the file's current one.
    Upload(UploadArgs),
}

#[derive(Args, Debug)]
pub struct Target {
    /// The service group, SERVICE.GROUP[@ORG] (e.g. redis.default@acme).
    #[arg(value_name = "SVC.GROUP[@ORG]")]
    pub group: String,
    /// The version: a number above the group's current one (version 0 is never applied).
    #[arg(value_name = "VERSION")]
    pub version_number: u64,
    /// Encrypt to the group's latest public key from this user's latest secret key (both in
    /// the key cache). Supervisors started with --org accept nothing else for their org.
    #[arg(long, short = 'u', value_name = "USER")]
    pub user: Option<String>,
    #[command(flatten)]
    pub cache: CacheArgs,
    #[command(flatten)]
    pub remote: RemoteSup,
}

#[derive(Args, Debug)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub target: Target,
    /// The TOML file; `-` or absent: stdin.
    pub file: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(flatten)]
    pub target: Target,
    /// The file; it keeps its name (a plain file name) in `svc/NAME/files/`.
    pub file: PathBuf,
}

/// At most `MAX_PAYLOAD` bytes of `file` (stdin for `-` or none), kept out of the logs.
fn read_payload(file: Option<&PathBuf>) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let mut buf = Zeroizing::new(Vec::new());
    let limit = MAX_PAYLOAD as u64 + 1;
    match file.filter(|p| p.as_os_str() != "-") {
        Some(p) => std::fs::File::open(p)
            .with_context(|| format!("opening {}", p.display()))?
            .take(limit)
            .read_to_end(&mut buf)
            .with_context(|| format!("reading {}", p.display()))?,
        None => std::io::stdin().lock().take(limit).read_to_end(&mut buf).context("reading stdin")?,
    };
    Ok(buf)
}

impl Target {
    fn group(&self) -> anyhow::Result<ServiceGroup> {
        Ok(self.group.parse()?)
    }

    /// The bytes to send and whether they are encrypted.
    fn seal(&self, group: &ServiceGroup, plain: &[u8]) -> anyhow::Result<(Vec<u8>, bool)> {
        let Some(user) = &self.user else { return Ok((plain.to_vec(), false)) };
        let cache = self.cache.cache();
        let sender = cache
            .latest(KeyKind::BoxSecret, user)
            .and_then(|f| BoxSecretKeyFile::try_from(&f))
            .with_context(|| format!("user {user}'s secret key (warren user key generate {user})"))?;
        let name = group.to_string();
        let receiver = cache
            .latest(KeyKind::BoxPublic, &name)
            .and_then(|f| BoxPublicKey::try_from(&f))
            .with_context(|| {
                let org = group.org.as_deref().unwrap_or("ORG");
                format!(
                    "{name}'s public key (warren svc key generate {}.{} {org})",
                    group.service, group.group
                )
            })?;
        let message = boxes::encrypt(plain, &sender, &receiver)?;
        Ok((message.to_text().into_bytes(), true))
    }

    fn warn_plaintext(&self, group: &ServiceGroup) {
        if self.user.is_none()
            && let Some(org) = &group.org
        {
            eprintln!(
                "warning: sending plaintext to {group}: supervisors started with --org {org} refuse it (add --user USER)"
            );
        }
    }
}

pub fn run_config(cmd: ConfigCommand) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Apply(a) => {
            let group = a.target.group()?;
            let plain = read_payload(a.file.as_ref())?;
            // Checked here first: a broken file never reaches a supervisor.
            payload::check_config(&plain)?;
            a.target.warn_plaintext(&group);
            let (cfg, encrypted) = a.target.seal(&group, &plain)?;
            let req = proto::SvcSetCfg {
                service_group: Some(group_to_proto(&group)),
                cfg: Some(cfg),
                version: Some(a.target.version_number),
                is_encrypted: Some(encrypted),
            };
            a.target.remote.call(&CtlRequest::SvcSetCfg(req), false)?;
            Ok(())
        }
    }
}

pub fn run_file(cmd: FileCommand) -> anyhow::Result<()> {
    match cmd {
        FileCommand::Upload(a) => {
            let group = a.target.group()?;
            let name = a
                .file
                .file_name()
                .and_then(|n| n.to_str())
                .with_context(|| format!("{}: no file name", a.file.display()))?
                .to_string();
            payload::check_file_name(&name)?;
            if a.file.as_os_str() == "-" {
                bail!("file upload needs a file (its name is the name it gets), not stdin");
            }
            let body = read_payload(Some(&a.file))?;
            payload::check_size("the file", &body)?;
            a.target.warn_plaintext(&group);
            let (content, encrypted) = a.target.seal(&group, &body)?;
            let req = proto::SvcFilePut {
                service_group: Some(group_to_proto(&group)),
                content: Some(content),
                filename: Some(name),
                version: Some(a.target.version_number),
                is_encrypted: Some(encrypted),
            };
            a.target.remote.call(&CtlRequest::SvcFilePut(req), false)?;
            Ok(())
        }
    }
}
