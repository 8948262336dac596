//! Services: packages in (authoring, the package store), and later their specs, supervision,
//! templating and hooks.
//!
//! - [`package`]: idents (`ORIGIN/NAME/VERSION/RELEASE`), metadata files, the package store
//!   under `{data_path}/pkgs` and its all-or-nothing install.
//! - [`plan`]: plan.toml, the source of `warren pkg build`.
//! - [`build`]: a source directory into a signed `.hart` with Habitat's payload layout.

pub mod build;
pub mod package;
pub mod plan;

pub use package::{InstalledPackage, PackageIdent, PackageMeta, PackageStore};
