//! Rendering a package's templates (`config/*` and `hooks/*`) with Habitat's names: `cfg` (the
//! layered configuration), `pkg` (ident and paths), `sys` (this host and supervisor), `svc`
//! (the service group); helpers `toToml`, `toJson`, `strJoin`, `toUppercase`, `toLowercase`,
//! and the block helper `eachAlive` (a group's members whose `alive` is true).
//! Values are not HTML-escaped (these are config files and scripts). A file is rewritten only
//! when its content changes, so what changed can be told apart (reconfigure vs restart).

use std::path::{Path, PathBuf};

use handlebars::{
    BlockContext, BlockParams, Context, Handlebars, Helper, HelperDef, HelperResult, Output, RenderContext,
    RenderErrorReason, Renderable, handlebars_helper,
};
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("{path}: {message}")]
    Render { path: PathBuf, message: String },
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

handlebars_helper!(to_json: |v: Json| serde_json::to_string_pretty(v).unwrap_or_default());
handlebars_helper!(to_toml: |v: Json| {
    match v {
        Value::Object(_) => toml::to_string(v).unwrap_or_default(),
        // A lone value: its TOML form, e.g. "a" with quotes, 3, [1, 2].
        other => toml::Value::try_from(other).map(|t| t.to_string()).unwrap_or_default(),
    }
});
handlebars_helper!(str_join: |list: Json, sep: str| {
    list.as_array()
        .map(|a| a.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect::<Vec<_>>().join(sep))
        .unwrap_or_default()
});
handlebars_helper!(to_upper: |s: str| s.to_uppercase());
handlebars_helper!(to_lower: |s: str| s.to_lowercase());

/// `{{#eachAlive bind.db.members as |member|}}...{{else}}...{{/eachAlive}}`: Habitat's `each`
/// over the members whose `alive` is true, with `@index`, `@first` and `@last` counted among
/// those; the `else` block when none is.
struct EachAlive;

impl HelperDef for EachAlive {
    fn call<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        r: &'reg Handlebars<'reg>,
        ctx: &'rc Context,
        rc: &mut RenderContext<'reg, 'rc>,
        out: &mut dyn Output,
    ) -> HelperResult {
        let list = h.param(0).ok_or(RenderErrorReason::ParamNotFoundForIndex("eachAlive", 0))?;
        let alive: Vec<&Value> = match list.value() {
            Value::Array(members) => {
                members.iter().filter(|m| m.get("alive").and_then(Value::as_bool).unwrap_or(false)).collect()
            }
            Value::Null => Vec::new(),
            other => {
                // The type only: the value may hold a resolved credential.
                let kind = match other {
                    Value::Bool(_) => "a boolean",
                    Value::Number(_) => "a number",
                    Value::String(_) => "a string",
                    _ => "a table",
                };
                let what = format!("eachAlive needs a list of members, not {kind}");
                return Err(RenderErrorReason::Other(what).into());
            }
        };
        if alive.is_empty() {
            return match h.inverse() {
                Some(t) => t.render(r, ctx, rc, out),
                None => Ok(()),
            };
        }
        let Some(t) = h.template() else { return Ok(()) };
        let last = alive.len() - 1;
        for (i, member) in alive.into_iter().enumerate() {
            let mut block = BlockContext::new();
            block.set_base_value(member.clone());
            block.set_local_var("index", Value::from(i));
            block.set_local_var("first", Value::from(i == 0));
            block.set_local_var("last", Value::from(i == last));
            if let Some(name) = h.block_param() {
                let mut params = BlockParams::new();
                params.add_value(name, member.clone())?;
                block.set_block_params(params);
            }
            rc.push_block(block);
            let rendered = t.render(r, ctx, rc, out);
            rc.pop_block();
            rendered?;
        }
        Ok(())
    }
}

/// A registry with Habitat's helpers and no escaping.
pub fn registry() -> Handlebars<'static> {
    let mut hb = Handlebars::new();
    hb.register_escape_fn(handlebars::no_escape);
    hb.register_helper("toJson", Box::new(to_json));
    hb.register_helper("toToml", Box::new(to_toml));
    hb.register_helper("strJoin", Box::new(str_join));
    hb.register_helper("toUppercase", Box::new(to_upper));
    hb.register_helper("toLowercase", Box::new(to_lower));
    hb.register_helper("eachAlive", Box::new(EachAlive));
    hb
}

pub fn render(hb: &Handlebars<'_>, path: &Path, text: &str, data: &Value) -> Result<String, TemplateError> {
    hb.render_template(text, data)
        .map_err(|e| TemplateError::Render { path: path.to_path_buf(), message: e.to_string() })
}

/// Replaces `to` in one rename, with `mode` (whatever the umask) and `group` set before it
/// appears.
fn write(to: &Path, bytes: &[u8], mode: u32, group: Option<u32>) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut f = crate::fsutil::AtomicFile::create(to, mode, crate::fsutil::Existing::Replace)?;
    f.file().set_permissions(std::fs::Permissions::from_mode(mode))?;
    if let Some(gid) = group {
        std::os::unix::fs::fchown(f.file(), None, Some(gid))?;
    }
    f.file().write_all(bytes)?;
    f.commit()?;
    Ok(())
}

/// Renders every file of `src` (recursively) into `dst` with `mode`; returns the relative paths
/// whose content changed. Files in `dst` that `src` no longer has are removed (and count).
/// `extra` adds single files: (source path, path relative to `dst`).
pub fn render_dir(
    hb: &Handlebars<'_>,
    src: &Path,
    dst: &Path,
    data: &Value,
    mode: u32,
    extra: &[(PathBuf, PathBuf)],
) -> Result<Vec<PathBuf>, TemplateError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TemplateError::Io { path, source }
    };
    let mut sources: Vec<(PathBuf, PathBuf)> = extra.to_vec();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = src.join(&rel);
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let rel = rel.join(entry.file_name());
            let ty = entry.file_type().map_err(io(&entry.path()))?;
            if ty.is_dir() {
                stack.push(rel);
            } else if ty.is_file() {
                // Links and devices are not templates.
                sources.push((src.join(&rel), rel));
            }
        }
    }
    // Rendered files take the folder's group (the service's, under root), so a mode like 0640
    // lets the service read its config and nobody else.
    let group = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dst).ok().filter(|_| super::users::is_root()).map(|m| m.gid())
    };
    let mut rendered = Vec::new();
    let mut changed = Vec::new();
    for (from, rel) in sources {
        let text = std::fs::read_to_string(&from).map_err(io(&from))?;
        let out = render(hb, &from, &text, data)?;
        let to = dst.join(&rel);
        if std::fs::read(&to).ok().as_deref() != Some(out.as_bytes()) {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            write(&to, out.as_bytes(), mode, group).map_err(io(&to))?;
            changed.push(rel.clone());
        }
        rendered.push(rel);
    }
    // What the package no longer renders goes.
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(dst.join(&rel)) else { continue };
        for entry in entries.flatten() {
            let rel = rel.join(entry.file_name());
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(rel),
                Ok(_) if !rendered.contains(&rel) => {
                    let _ = std::fs::remove_file(dst.join(&rel));
                    changed.push(rel);
                }
                _ => {}
            }
        }
    }
    changed.sort();
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn habitats_names_and_helpers_render_without_escaping() {
        let hb = registry();
        let data = serde_json::json!({
            "cfg": {"message": "a <b> & c", "port": 8080, "hosts": ["x", "y"], "tls": {"on": true}},
            "pkg": {"name": "web"},
        });
        let out = render(
            &hb,
            Path::new("t"),
            "{{cfg.message}}|{{cfg.port}}|{{strJoin cfg.hosts \",\"}}|{{toUppercase pkg.name}}|{{cfg.missing}}|",
            &data,
        )
        .unwrap();
        assert_eq!(out, "a <b> & c|8080|x,y|WEB||");
        let toml = render(&hb, Path::new("t"), "{{toToml cfg.tls}}", &data).unwrap();
        assert_eq!(toml.trim(), "on = true");
        let json = render(&hb, Path::new("t"), "{{toJson cfg.hosts}}", &data).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&json).unwrap(), serde_json::json!(["x", "y"]));
        let bad = render(&hb, Path::new("config/x.conf"), "{{#if}}", &data).unwrap_err().to_string();
        assert!(bad.contains("config/x.conf"), "{bad}");
    }

    #[test]
    fn each_alive_skips_members_that_are_not_alive() {
        let hb = registry();
        let data = serde_json::json!({"bind": {"db": {"members": [
            {"sys": {"ip": "10.0.0.1"}, "alive": true},
            {"sys": {"ip": "10.0.0.2"}, "alive": false},
            {"sys": {"ip": "10.0.0.3"}},
            {"sys": {"ip": "10.0.0.4"}, "alive": true},
        ]}, "none": {"members": [{"alive": false}]}}});
        let t = "{{#eachAlive bind.db.members as |m|}}{{@index}}={{m.sys.ip}}{{#if @first}}(first){{/if}}{{#unless @last}},{{/unless}}{{/eachAlive}}";
        assert_eq!(render(&hb, Path::new("t"), t, &data).unwrap(), "0=10.0.0.1(first),1=10.0.0.4");
        // Without a block parameter, the member is the context.
        let t = "{{#eachAlive bind.db.members}}[{{sys.ip}}]{{/eachAlive}}";
        assert_eq!(render(&hb, Path::new("t"), t, &data).unwrap(), "[10.0.0.1][10.0.0.4]");
        let t = "{{#eachAlive bind.none.members}}x{{else}}nobody{{/eachAlive}}|{{#eachAlive bind.missing.members}}x{{else}}unbound{{/eachAlive}}";
        assert_eq!(render(&hb, Path::new("t"), t, &data).unwrap(), "nobody|unbound");
        let bad = render(&hb, Path::new("t"), "{{#eachAlive bind}}x{{/eachAlive}}", &data).unwrap_err();
        assert!(bad.to_string().contains("list of members, not a table"), "{bad}");
        let secret = serde_json::json!({"cfg": {"password": "hunter2-Qq"}});
        let bad =
            render(&hb, Path::new("t"), "{{#eachAlive cfg.password}}x{{/eachAlive}}", &secret).unwrap_err();
        assert!(!bad.to_string().contains("hunter2"), "a value never reaches the error: {bad}");
    }

    #[test]
    fn only_changed_files_are_rewritten_and_stale_ones_go() {
        let dir = tempfile::tempdir().unwrap();
        let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.conf"), "port = {{cfg.port}}\n").unwrap();
        std::fs::write(src.join("sub/b.txt"), "fixed\n").unwrap();
        let hb = registry();
        let data = |p: u16| serde_json::json!({"cfg": {"port": p}});
        let first = render_dir(&hb, &src, &dst, &data(1), 0o640, &[]).unwrap();
        assert_eq!(first, vec![PathBuf::from("a.conf"), PathBuf::from("sub/b.txt")]);
        assert!(render_dir(&hb, &src, &dst, &data(1), 0o640, &[]).unwrap().is_empty(), "nothing changed");
        assert_eq!(render_dir(&hb, &src, &dst, &data(2), 0o640, &[]).unwrap(), vec![PathBuf::from("a.conf")]);
        assert_eq!(std::fs::read_to_string(dst.join("a.conf")).unwrap(), "port = 2\n");
        std::fs::remove_file(src.join("sub/b.txt")).unwrap();
        assert_eq!(
            render_dir(&hb, &src, &dst, &data(2), 0o640, &[]).unwrap(),
            vec![PathBuf::from("sub/b.txt")]
        );
        assert!(!dst.join("sub/b.txt").exists());
    }
}
