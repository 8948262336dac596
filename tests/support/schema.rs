//! A JSON Schema (draft-07) validator for exactly the keywords Habitat's gateway schemas use
//! (components/sup/doc/*.json): `type`, `enum`, `properties`, `required`,
//! `additionalProperties`, `items`, `oneOf`, `$ref` (within a file and to a sibling file) and
//! `definitions`; annotations (`description`, `default`, ...) are skipped. Any other keyword
//! is an error, so a schema that grows one is never half-checked.
//!
//! Its own tests are in tests/services_http.rs (a module here would run in every test binary).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

const ANNOTATIONS: &[&str] = &["$schema", "$comment", "$deprecated", "description", "default", "examples"];

/// Schemas by file name, all from one folder.
pub struct Validator {
    docs: BTreeMap<String, Value>,
    /// Where a `#/definitions/NAME` that its own file lacks is looked up (Habitat's services
    /// schema points at a definition only render_context_schema.json has).
    fallback: Option<String>,
}

impl Validator {
    /// Every `*.json` in `dir`.
    pub fn load(dir: &Path) -> Validator {
        let mut docs = BTreeMap::new();
        for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())).flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") {
                let text = std::fs::read_to_string(e.path()).unwrap();
                let doc = serde_json::from_str(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
                docs.insert(name, doc);
            }
        }
        Validator { docs, fallback: None }
    }

    /// Habitat's gateway schemas (components/sup/doc of the interop fixtures), with the one
    /// dangling reference resolved as the fixtures' INDEX.md says.
    pub fn habitat() -> Validator {
        let mut v = Validator::load(&super::fixtures::interop_dir().join("components/sup/doc"));
        v.fallback = Some("render_context_schema.json".into());
        v
    }

    /// Every way `instance` breaks schema file `name` (empty: valid).
    pub fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let schema = self.docs.get(name).unwrap_or_else(|| panic!("no schema {name}"));
        let mut errors = Vec::new();
        self.check(name, schema, instance, "", &mut errors);
        errors
    }

    fn resolve(&self, file: &str, reference: &str) -> Result<(String, &Value), String> {
        let (target, pointer) = reference.split_once('#').unwrap_or((reference, ""));
        let target = if target.is_empty() { file } else { target };
        let doc = self.docs.get(target).ok_or_else(|| format!("$ref {reference}: no file {target}"))?;
        if let Some(v) = doc.pointer(pointer) {
            return Ok((target.to_string(), v));
        }
        match &self.fallback {
            Some(f) if target == file && f != file => {
                let v = self.docs.get(f).and_then(|d| d.pointer(pointer));
                v.map(|v| (f.clone(), v)).ok_or_else(|| format!("$ref {reference} resolves nowhere"))
            }
            _ => Err(format!("$ref {reference} resolves nowhere")),
        }
    }

    fn check(&self, file: &str, schema: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(schema) = schema.as_object() else {
            errors.push(format!("{at}: the schema here is not an object"));
            return;
        };
        let mut fail = |m: String| errors.push(format!("{}: {m}", if at.is_empty() { "/" } else { at }));
        for (k, rule) in schema {
            match k.as_str() {
                "definitions" | "properties" | "required" | "additionalProperties" => {}
                k if ANNOTATIONS.contains(&k) => {}
                "type" => {
                    let types: Vec<&str> = match rule {
                        Value::String(t) => vec![t],
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        _ => vec![],
                    };
                    if !types.iter().any(|t| is_type(v, t)) {
                        fail(format!("{v} is not of type {rule}"));
                    }
                }
                "enum" => {
                    if !rule.as_array().is_some_and(|a| a.contains(v)) {
                        fail(format!("{v} is not one of {rule}"));
                    }
                }
                "items" | "oneOf" | "$ref" => {}
                other => fail(format!("unsupported schema keyword {other:?}")),
            }
        }
        if let Some(r) = schema.get("$ref") {
            match r.as_str().map(|r| self.resolve(file, r)) {
                Some(Ok((f, target))) => self.check(&f, target, v, at, errors),
                Some(Err(e)) => errors.push(format!("{at}: {e}")),
                None => errors.push(format!("{at}: $ref is not a string")),
            }
        }
        if let Some(subs) = schema.get("oneOf") {
            let subs = subs.as_array().map(Vec::as_slice).unwrap_or_default();
            let matching = subs
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    self.check(file, s, v, at, &mut e);
                    e.is_empty()
                })
                .count();
            if matching != 1 {
                errors.push(format!("{at}: {matching} of oneOf's {} schemas match {v}", subs.len()));
            }
        }
        if let (Some(items), Value::Array(a)) = (schema.get("items"), v) {
            for (i, item) in a.iter().enumerate() {
                self.check(file, items, item, &format!("{at}/{i}"), errors);
            }
        }
        let Value::Object(obj) = v else { return };
        let props = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
            if let Some(n) = name.as_str().filter(|n| !obj.contains_key(*n)) {
                errors.push(format!("{}: required {n:?} is missing", if at.is_empty() { "/" } else { at }));
            }
        }
        for (k, value) in obj {
            let here = format!("{at}/{k}");
            match (props.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(s), _) => self.check(file, s, value, &here, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{here}: not allowed here")),
                (None, Some(s @ Value::Object(_))) => self.check(file, s, value, &here, errors),
                (None, _) => {}
            }
        }
    }
}

fn is_type(v: &Value, t: &str) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        "number" => v.is_number(),
        // draft-07: any number without a fractional part.
        "integer" => v.is_i64() || v.is_u64() || v.as_f64().is_some_and(|f| f.fract() == 0.0),
        _ => false,
    }
}
