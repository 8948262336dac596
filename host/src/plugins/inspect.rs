//! `warren plugin inspect FILE`: what warren sees in a plugin file, without compiling it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::Manifest;
use super::registry::read_plugin_file;
use super::signing::{self, SignatureStatus, TrustedKeys};
use super::{PluginError, World, wasm};
use crate::crypto::sodium::blake2b_256;

#[derive(Clone, Debug, Serialize)]
pub struct Inspection {
    pub file: PathBuf,
    pub size: u64,
    /// BLAKE2b-256 of the whole file (what the compile cache is keyed by).
    pub blake2b: String,
    /// BLAKE2b-256 of the file without its signature section (what is signed).
    pub signed_digest: String,
    pub name: Option<String>,
    pub version: Option<String>,
    pub world: Option<World>,
    pub manifest: Option<Manifest>,
    pub manifest_error: Option<String>,
    pub signer: Option<String>,
    pub signature: SignatureStatus,
}

pub fn inspect_file(path: &Path, keys: &dyn TrustedKeys) -> Result<Inspection, PluginError> {
    let bytes = read_plugin_file(path)?;
    wasm::check_component_header(&bytes)?;
    let signature = signing::check(&bytes, keys)?;
    let (manifest, manifest_error) = match Manifest::from_component(&bytes) {
        Ok(m) => (Some(m), None),
        Err(e) => (None, Some(e.to_string())),
    };
    Ok(Inspection {
        file: path.to_path_buf(),
        size: bytes.len() as u64,
        blake2b: hex::encode(blake2b_256(&bytes)),
        signed_digest: hex::encode(signing::signed_digest(&bytes)?),
        name: manifest.as_ref().map(|m| m.name.clone()),
        version: manifest.as_ref().map(|m| m.version.clone()),
        world: manifest.as_ref().map(|m| m.world),
        manifest,
        manifest_error,
        signer: signature.signer().map(str::to_string),
        signature,
    })
}
