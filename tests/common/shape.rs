//! The JSON result shapes the README documents (`<!-- json-shape NAME -->` before a ```json
//! block), and a check of a command's real output against them. The notation is the README's
//! ("JSON results"): type names, `T?`, `'literal'|…`, `[T]`, `{"*": T}`, and objects with
//! exactly the keys shown (`key?` may be absent).

use std::collections::BTreeMap;

use serde_json::Value;

pub struct Shapes {
    pub named: BTreeMap<String, Value>,
}

/// `dependsOn`, `schemaVersion`: a lowercase start, then letters and digits.
pub fn is_camel_case(key: &str) -> bool {
    let mut chars = key.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

impl Shapes {
    pub fn from_readme() -> Self {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
        let mut named = BTreeMap::new();
        let mut lines = readme.lines();
        while let Some(line) = lines.next() {
            let Some(name) = line.trim().strip_prefix("<!-- json-shape ").and_then(|r| r.strip_suffix(" -->")) else {
                continue;
            };
            assert_eq!(lines.next().map(str::trim), Some("```json"), "a ```json block follows the shape of `{name}`");
            let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            let shape: Value = serde_json::from_str(&block.join("\n"))
                .unwrap_or_else(|e| panic!("the README's shape of `{name}` is not JSON: {e}"));
            assert!(named.insert(name.to_string(), shape).is_none(), "`{name}` has two shapes in the README");
        }
        let shapes = Shapes { named };
        for (name, shape) in &shapes.named {
            let mut keys = Vec::new();
            documented_keys(shape, &mut keys);
            for key in keys {
                assert!(is_camel_case(&key), "the README's shape of `{name}` has the key `{key}`, not camelCase");
            }
        }
        shapes
    }

    /// The shapes of commands (lowercase names: `up`, `sim-build`, `error`).
    pub fn commands(&self) -> Vec<String> {
        self.named.keys().filter(|n| n.starts_with(|c: char| c.is_ascii_lowercase())).cloned().collect()
    }

    /// Panics unless `line` (a `result`, or an `error` for the shape `error`) has the shape
    /// `name`, with `schemaVersion`.
    pub fn check_line(&self, name: &str, line: &Value) {
        let expected = if name == "error" { "error" } else { "result" };
        assert_eq!(line["event"], expected, "a {expected} line for `{name}`: {line}");
        let mut value = line.clone();
        value.as_object_mut().unwrap().remove("event");
        assert!(value["schemaVersion"].is_u64(), "`{name}` carries schemaVersion: {line}");
        self.check(name, &value);
    }

    /// Panics unless `value` has the shape `name`, naming the first place where it does not.
    pub fn check(&self, name: &str, value: &Value) {
        let shape = self.named.get(name).unwrap_or_else(|| panic!("the README has no shape `{name}`"));
        if let Err(problem) = self.matches(shape, value, name) {
            panic!("the JSON of `{name}` does not have the README's shape: {problem}\n{value:#}");
        }
    }

    fn matches(&self, shape: &Value, value: &Value, at: &str) -> Result<(), String> {
        match shape {
            Value::Number(_) | Value::Bool(_) | Value::Null if shape == value => Ok(()),
            Value::Number(_) | Value::Bool(_) | Value::Null => Err(format!("{at}: {value} is not {shape}")),
            Value::String(types) => self.matches_types(types, value, at),
            Value::Array(items) => {
                let item = items.first().expect("a list shape names its item");
                let values = value.as_array().ok_or_else(|| format!("{at}: {value} is not a list"))?;
                values.iter().enumerate().try_for_each(|(i, v)| self.matches(item, v, &format!("{at}[{i}]")))
            }
            Value::Object(fields) => {
                let object = value.as_object().ok_or_else(|| format!("{at}: {value} is not an object"))?;
                if let Some(item) = fields.get("*") {
                    return object.iter().try_for_each(|(k, v)| self.matches(item, v, &format!("{at}[{k:?}]")));
                }
                for (key, field) in fields {
                    let (key, optional) = match key.strip_suffix('?') {
                        Some(key) => (key, true),
                        None => (key.as_str(), false),
                    };
                    match object.get(key) {
                        Some(v) => self.matches(field, v, &format!("{at}.{key}"))?,
                        None if optional => {}
                        None => return Err(format!("{at}: no `{key}`")),
                    }
                }
                let documented: Vec<&str> = fields.keys().map(|k| k.trim_end_matches('?')).collect();
                match object.keys().find(|k| !documented.contains(&k.as_str())) {
                    Some(extra) => Err(format!("{at}: `{extra}` is not documented")),
                    None => Ok(()),
                }
            }
        }
    }

    fn matches_types(&self, types: &str, value: &Value, at: &str) -> Result<(), String> {
        let (types, nullable) = match types.strip_suffix('?') {
            Some(types) => (types, true),
            None => (types, false),
        };
        if nullable && value.is_null() {
            return Ok(());
        }
        let mut problems = Vec::new();
        for alternative in types.split('|') {
            let fits = match alternative {
                "string" => value.is_string(),
                "integer" => value.is_u64() || value.is_i64(),
                "boolean" => value.is_boolean(),
                "null" => value.is_null(),
                "object" => value.is_object(),
                literal if literal.starts_with('\'') => Some(literal.trim_matches('\'')) == value.as_str(),
                named => match self.named.get(named) {
                    Some(shape) => match self.matches(shape, value, at) {
                        Ok(()) => true,
                        Err(problem) => {
                            problems.push(problem);
                            false
                        }
                    },
                    None => panic!("the README's shape at {at} names `{named}`, which it does not define"),
                },
            };
            if fits {
                return Ok(());
            }
        }
        Err(problems.pop().unwrap_or_else(|| format!("{at}: {value} is not {types}")))
    }
}

/// Every object key a shape names (not the `*` of a map).
fn documented_keys(shape: &Value, keys: &mut Vec<String>) {
    match shape {
        Value::Object(fields) => {
            for (key, field) in fields {
                if key != "*" {
                    keys.push(key.trim_end_matches('?').to_string());
                }
                documented_keys(field, keys);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| documented_keys(item, keys)),
        _ => {}
    }
}

/// Every line of NDJSON output.
pub fn lines(stdout: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The `result` line of NDJSON output.
pub fn result_line(stdout: &[u8]) -> Value {
    lines(stdout).into_iter().find(|l| l["event"] == "result").expect("a result line")
}
