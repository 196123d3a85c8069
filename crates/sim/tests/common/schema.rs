//! OpenAPI 3.0 component schemas as JSON Schema validators, for contract tests.
//!
//! `OpenApi::load` reads an OpenAPI YAML file and turns its
//! `components.schemas` into JSON Schema 2020-12: OpenAPI's `nullable: true`
//! becomes a `"null"` alternative, boolean `exclusiveMinimum`/`Maximum`
//! become numbers. `$ref`s such as `#/components/schemas/x` keep working
//! because every validator is built on the whole converted document.
//! Formats are not asserted (Graph's spec carries explicit patterns instead).
//!
//! Include it from a test file with
//! `#[path = "common/schema.rs"] mod schema;`.

#![allow(dead_code)]

use std::path::Path;

use serde_json::{Map, Value, json};

pub struct OpenApi {
    /// `{"components": {"schemas": {...}}}`, converted.
    document: Value,
}

impl OpenApi {
    /// Loads and converts an OpenAPI 3.0 YAML file. Panics with the reason
    /// when the file is missing or not YAML: a test cannot go on without it.
    pub fn load(path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let yaml: serde_norway::Value =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", path.display()));
        let spec = yaml_to_json(yaml);
        let mut schemas = spec
            .pointer("/components/schemas")
            .cloned()
            .unwrap_or_else(|| panic!("{} has no components.schemas", path.display()));
        if let Value::Object(map) = &mut schemas {
            for schema in map.values_mut() {
                convert_schema(schema);
            }
        }
        OpenApi { document: json!({ "components": { "schemas": schemas } }) }
    }

    /// Names of every schema in `components.schemas`.
    pub fn schema_names(&self) -> Vec<String> {
        self.document["components"]["schemas"].as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default()
    }

    /// A validator for `components/schemas/<name>`.
    pub fn validator(&self, name: &str) -> jsonschema::Validator {
        assert!(
            self.document["components"]["schemas"].get(name).is_some(),
            "no schema named {name:?}; known: {:?}",
            self.schema_names()
        );
        let mut root = self.document.clone();
        let pointer = name.replace('~', "~0").replace('/', "~1");
        root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
        root["$ref"] = json!(format!("#/components/schemas/{pointer}"));
        jsonschema::draft202012::options()
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {name:?} does not compile: {e}"))
    }

    /// Every violation of `instance` against schema `name`, as readable lines.
    pub fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        self.validator(name)
            .iter_errors(instance)
            .map(|e| format!("{} at {}: {}", name, e.instance_path(), e))
            .collect()
    }

    /// Panics, listing the violations, unless `instance` is valid.
    #[track_caller]
    pub fn assert_valid(&self, name: &str, instance: &Value) {
        let errors = self.errors(name, instance);
        assert!(errors.is_empty(), "body does not match {name}:\n{}\nbody: {instance:#}", errors.join("\n"));
    }

    /// Panics unless `instance` is invalid: proves a validator can fail.
    #[track_caller]
    pub fn assert_invalid(&self, name: &str, instance: &Value) {
        assert!(!self.errors(name, instance).is_empty(), "expected {name} to reject {instance:#}");
    }
}

/// YAML to JSON, with non-string mapping keys (e.g. response codes written as
/// `200:`) turned into strings.
fn yaml_to_json(value: serde_norway::Value) -> Value {
    use serde_norway::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                json!(n.as_f64())
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(yaml_to_json).collect()),
        Y::Mapping(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match yaml_to_json(k) {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        Y::Tagged(tagged) => yaml_to_json(tagged.value),
    }
}

/// Rewrites one OpenAPI 3.0 schema object into JSON Schema, in place,
/// walking only into keywords that hold schemas (so a property that happens
/// to be called `type` or `nullable` is left alone).
fn convert_schema(schema: &mut Value) {
    let Value::Object(obj) = schema else { return };

    for key in ["items", "not", "additionalProperties"] {
        if let Some(sub) = obj.get_mut(key) {
            convert_schema(sub);
        }
    }
    for key in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(subs)) = obj.get_mut(key) {
            subs.iter_mut().for_each(convert_schema);
        }
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        props.values_mut().for_each(convert_schema);
    }

    for (bool_key, num_key) in [("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")] {
        match obj.get(bool_key) {
            Some(Value::Bool(true)) => {
                let bound = obj.remove(num_key).unwrap_or(Value::Null);
                obj.insert(bool_key.into(), bound);
            }
            Some(Value::Bool(false)) => {
                obj.remove(bool_key);
            }
            _ => {}
        }
    }

    if obj.remove("nullable") != Some(Value::Bool(true)) {
        return;
    }
    if let Some(Value::Array(values)) = obj.get_mut("enum")
        && !values.contains(&Value::Null)
    {
        values.push(Value::Null);
    }
    match obj.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            obj.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        _ => {
            // No type of its own (a $ref or a combinator): allow null beside it.
            let inner = Value::Object(std::mem::take(obj));
            obj.insert("anyOf".into(), json!([inner, { "type": "null" }]));
        }
    }
}
