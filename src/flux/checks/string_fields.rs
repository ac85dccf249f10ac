//! Numbers and booleans where Kubernetes wants a string.
//!
//! kustomize-controller substitutes variables in the YAML text of each object *after*
//! kustomize re-serialised it (`resource.AsYAML`: JSON, then YAML), and parses the result
//! again (fluxcd/pkg `kustomize/kustomize_varsub.go`). The quotes of `value: "${DB_PORT}"`
//! are gone by then (`${DB_PORT}` needs none), so with `DB_PORT=3306` the field reads
//! `value: 3306`, an integer, and the API server refuses the object: `expected string, got
//! … 3306`. The re-parse is YAML 1.1 (sigs.k8s.io/yaml), so `yes`, `on` and `~` turn too.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::{Applier, Finding, Kind, Provided};
use crate::flux::documents::{self, Document};
use crate::flux::files::Texts;

/// The workaround kustomize-controller's documentation gives, in its words.
const DOCUMENTED: &str = "\"To convert the number or boolean to a string, you can wrap the variable with a double quotes var\" (kustomize-controller docs, \"Post build substitution of numbers and booleans\")";

/// A field Kubernetes types as a string.
struct Field {
    /// The locator path.
    path: String,
    /// What it is, for people.
    what: String,
    text: String,
}

/// Checks every string field in the files each substituting Kustomization applies.
pub fn check(texts: &Texts, appliers: &[Applier], provided: &BTreeMap<String, Provided>) -> Vec<Finding> {
    let mut findings = Vec::new();
    for applier in appliers.iter().filter(|a| a.substitutes && a.path_known) {
        for file in applier.files.iter().filter(|f| super::is_yaml(f)) {
            let Some(text) = texts.get(file) else { continue };
            if !text.contains("${") {
                continue;
            }
            for document in documents::parse(text) {
                if super::substitution_disabled(&document.value) {
                    continue;
                }
                findings.extend(check_document(file, &document, applier, provided));
            }
        }
    }
    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    findings.dedup();
    findings
}

fn check_document(
    file: &str,
    document: &Document,
    applier: &Applier,
    provided: &BTreeMap<String, Provided>,
) -> Vec<Finding> {
    let object = document.object().unwrap_or_else(|| "the object".to_string());
    let mut findings = Vec::new();
    for field in string_fields(&document.value) {
        let Some(Substituted { text: result, shown, sources }) = substitute(&field.text, applier, provided) else {
            continue;
        };
        let Some(reads_as) = reads_as(&result) else { continue };
        if needs_quotes(&field.text) {
            continue;
        }
        let from: Vec<String> = sources.iter().map(|(name, source)| format!("`${{{name}}}` from {source}")).collect();
        let variables: Vec<&str> = sources.iter().map(|(name, _)| name.as_str()).collect();
        let quoted: String = variables.iter().map(|v| format!("${{{v}}}")).collect();
        let message = format!(
            "{} of {object} is `{}`; Flux substitutes it with `{shown}` ({}), which reads as {reads_as} where Kubernetes wants a string, so the apply would fail",
            field.what,
            field.text,
            from.join(", "),
        );
        let fix = format!(
            "write `${{quote}}{quoted}${{quote}}` and add `quote: '\"'` to `spec.postBuild.substitute` of {}: {DOCUMENTED}. Quoting `\"{}\"` in the file does not help: Flux drops those quotes when it re-serialises the manifest before substituting",
            applier.key, field.text
        );
        findings.push(Finding::new(Kind::StringField, file, document.position(&field.path), message).with_fix(fix));
    }
    findings
}

/// The fields of an object that Kubernetes types as strings and that hold a `${`: labels and
/// annotations (of the object and of pod templates), container `env` values, and the data
/// of ConfigMaps and Secrets. A HelmRelease's `values` are the chart's business.
fn string_fields(object: &Value) -> Vec<Field> {
    let mut fields = Vec::new();
    let kind = object.get("kind").and_then(Value::as_str).unwrap_or_default();
    let data_fields: &[&str] = match kind {
        "ConfigMap" => &["data"],
        "Secret" => &["data", "stringData"],
        _ => &[],
    };
    for data in data_fields {
        for (key, value) in object.get(*data).and_then(Value::as_mapping).into_iter().flatten() {
            if let (Some(key), Some(text)) = (key.as_str(), value.as_str()) {
                fields.push(Field {
                    path: format!("{data}.{key}"),
                    what: format!("`{data}.{key}`"),
                    text: text.into(),
                });
            }
        }
    }
    walk(object, "", kind == "HelmRelease", &mut fields);
    fields.retain(|f| f.text.contains("${"));
    fields
}

fn walk(value: &Value, path: &str, helm_release: bool, fields: &mut Vec<Field>) {
    let join = |key: &str| if path.is_empty() { key.to_string() } else { format!("{path}.{key}") };
    match value {
        Value::Mapping(map) => {
            for (key, child) in map {
                let Some(key) = key.as_str() else { continue };
                let child_path = join(key);
                if helm_release && child_path == "spec.values" {
                    continue;
                }
                match key {
                    "metadata" => {
                        for (field, singular) in [("labels", "label"), ("annotations", "annotation")] {
                            let entries = child.get(field).and_then(Value::as_mapping).into_iter().flatten();
                            for (name, text) in entries {
                                if let (Some(name), Some(text)) = (name.as_str(), text.as_str()) {
                                    fields.push(Field {
                                        path: format!("{child_path}.{field}.{name}"),
                                        what: format!("{singular} `{name}`"),
                                        text: text.into(),
                                    });
                                }
                            }
                        }
                    }
                    "containers" | "initContainers" | "ephemeralContainers" => {
                        for (index, container) in child.as_sequence().into_iter().flatten().enumerate() {
                            let name = container.get("name").and_then(Value::as_str).unwrap_or("?");
                            let env = container.get("env").and_then(Value::as_sequence).into_iter().flatten();
                            for (position, variable) in env.enumerate() {
                                let (Some(variable_name), Some(text)) = (
                                    variable.get("name").and_then(Value::as_str),
                                    variable.get("value").and_then(Value::as_str),
                                ) else {
                                    continue;
                                };
                                fields.push(Field {
                                    path: format!("{child_path}[{index}].env[{position}].value"),
                                    what: format!("`env[name=\"{variable_name}\"].value` of container `{name}`"),
                                    text: text.into(),
                                });
                            }
                        }
                    }
                    _ => {}
                }
                walk(child, &child_path, helm_release, fields);
            }
        }
        Value::Sequence(items) => {
            for (index, item) in items.iter().enumerate() {
                walk(item, &format!("{path}[{index}]"), helm_release, fields);
            }
        }
        _ => {}
    }
}

/// A field's text after Flux's substitution.
struct Substituted {
    text: String,
    /// The same with secret values hidden.
    shown: String,
    /// Each variable and where its value came from.
    sources: Vec<(String, String)>,
}

/// The text after Flux's substitution (with secrets shown as such), and where each
/// variable's value came from; `None`
/// when a variable has neither a value devenv knows nor a default (the contract's concern).
fn substitute(text: &str, applier: &Applier, provided: &BTreeMap<String, Provided>) -> Option<Substituted> {
    let mut out = String::new();
    let mut shown = String::new();
    let mut sources = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        shown.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}')?;
        let inner = &after[..end];
        let name_len = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(inner.len());
        let (name, operator) = inner.split_at(name_len);
        let default = [":=", ":-", "=", "-"].iter().find_map(|op| operator.strip_prefix(op));
        match (applier.value_of(name, provided), default) {
            // `:=` and `:-` also replace an empty value.
            (Some(p), Some(d)) if p.value.is_empty() && operator.starts_with(':') => {
                out.push_str(d);
                shown.push_str(d);
                sources.push((name.to_string(), "its default".to_string()));
            }
            (Some(p), _) => {
                out.push_str(&p.value);
                shown.push_str(&p.shown());
                sources.push((name.to_string(), p.origin));
            }
            (None, Some(d)) => {
                out.push_str(d);
                shown.push_str(d);
                sources.push((name.to_string(), "its default".to_string()));
            }
            (None, None) => return None,
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    shown.push_str(rest);
    (!sources.is_empty()).then_some(Substituted { text: out, shown, sources })
}

/// Whether a YAML serialiser would quote this text, so what is substituted into it stays a string.
fn needs_quotes(text: &str) -> bool {
    text.contains(": ") || text.contains(" #") || text.contains('\n') || text.trim() != text
}

/// What a plain YAML 1.1 scalar reads as, when it is not a string: go-yaml v2's `resolve`,
/// which sigs.k8s.io/yaml uses to read the substituted text.
pub fn reads_as(text: &str) -> Option<&'static str> {
    const BOOLEANS: [&str; 22] = [
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON", "n", "N", "no", "No", "NO", "false",
        "False", "FALSE", "off", "Off", "OFF",
    ];
    if BOOLEANS.contains(&text) {
        return Some("a boolean");
    }
    if ["", "~", "null", "Null", "NULL"].contains(&text) {
        return Some("null");
    }
    let specials =
        [".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF", "-.inf", "-.Inf", "-.INF"];
    if specials.contains(&text) {
        return Some("a number");
    }
    match text.as_bytes()[0] {
        b'.' => text.parse::<f64>().is_ok().then_some("a number"),
        b'0'..=b'9' | b'+' | b'-' => {
            let plain = text.replace('_', "");
            (is_go_integer(&plain) || is_yaml_float(&plain)).then_some("a number")
        }
        _ => None,
    }
}

/// Go's `strconv.ParseInt(s, 0, 64)` syntax: a sign, then `0x`, `0o`, `0b`, a leading `0`
/// (octal) or decimal digits.
fn is_go_integer(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (digits, radix) = match unsigned.get(..2) {
        Some("0x" | "0X") => (&unsigned[2..], 16),
        Some("0o" | "0O") => (&unsigned[2..], 8),
        Some("0b" | "0B") => (&unsigned[2..], 2),
        _ if unsigned.len() > 1 && unsigned.starts_with('0') => (&unsigned[1..], 8),
        _ => (unsigned, 10),
    };
    !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix))
}

/// go-yaml's float pattern: `[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`.
fn is_yaml_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['+', '-']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    let mantissa_ok = match mantissa.split_once('.') {
        Some(("", fraction)) => digits(fraction),
        Some((whole, fraction)) => digits(whole) && (fraction.is_empty() || digits(fraction)),
        None => digits(mantissa),
    };
    let exponent_ok = exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e)));
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn reads_scalars_as_yaml_1_1_does() {
        for number in ["3306", "-1", "+7", "0x1F", "0o17", "017", "1_000", "1.5", ".5", "1e3", "2.", ".inf"] {
            assert_eq!(reads_as(number), Some("a number"), "{number}");
        }
        for boolean in ["true", "False", "yes", "on", "OFF", "y", "N"] {
            assert_eq!(reads_as(boolean), Some("a boolean"), "{boolean}");
        }
        for null in ["", "~", "null"] {
            assert_eq!(reads_as(null), Some("null"), "{null}");
        }
        for string in ["us-east-1", "devenv-shop-db:3306", "1.2.3", "0x", "08a", "e3", "3306a", "info", "1-2"] {
            assert_eq!(reads_as(string), None, "{string}");
        }
    }

    fn applier(files: &[&str], inline: &[(&str, &str)]) -> Applier {
        Applier {
            key: "Kustomization/flux-system/apps".into(),
            path: "apps".into(),
            path_known: true,
            substitutes: true,
            inline: inline.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            files: files.iter().map(|f| f.to_string()).collect::<BTreeSet<_>>(),
        }
    }

    fn provided() -> BTreeMap<String, Provided> {
        let service = |value: &str, output: &str| Provided {
            value: value.into(),
            origin: format!("service `loans-db`'s output `{output}`"),
            secret: false,
        };
        BTreeMap::from([
            ("DB_HOST".to_string(), service("devenv-lender-loans-db", "host")),
            ("DB_PORT".to_string(), service("3306", "port")),
            (
                "FEATURE_ON".to_string(),
                Provided { value: "true".into(), origin: "the profile's `environment`".into(), secret: false },
            ),
        ])
    }

    const DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: loans
  namespace: lending
  labels:
    db-port: "${DB_PORT}"
spec:
  template:
    metadata:
      annotations:
        feature: ${FEATURE_ON}
    spec:
      containers:
        - name: loans
          env:
            - name: DB_ADDRESS
              value: ${DB_HOST}:${DB_PORT}
            - name: DB_PORT
              value: "${DB_PORT}"
            - name: RETRIES
              value: ${RETRIES:=3}
            - name: QUOTED
              value: ${quote}${DB_PORT}${quote}
            - name: UNKNOWN
              value: ${NOBODY_KNOWS}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: loans-settings
data:
  port: ${DB_PORT}
"#;

    #[test]
    fn a_whole_value_that_reads_as_a_number_or_boolean_is_found_with_its_line() {
        let dir = crate::flux::files::tests::write_tree(&[("apps/loans.yaml", DEPLOYMENT)]);
        let findings =
            check(&Texts::of_dir(dir.path()), &[applier(&["apps/loans.yaml"], &[("quote", "\"")])], &provided());
        let places: Vec<(Option<usize>, &str)> =
            findings.iter().map(|f| (f.line, f.message.split(" of ").next().unwrap())).collect();
        assert_eq!(
            places,
            [
                (Some(7), "label `db-port`"),
                (Some(12), "annotation `feature`"),
                (Some(20), "`env[name=\"DB_PORT\"].value`"),
                (Some(22), "`env[name=\"RETRIES\"].value`"),
                (Some(33), "`data.port`"),
            ],
            "{findings:#?}"
        );
        let port = &findings[2];
        assert_eq!(port.id, Some("DEV067"));
        assert_eq!((port.file.as_str(), port.column), ("apps/loans.yaml", Some(22)));
        assert!(port.message.contains("Flux substitutes it with `3306` (`${DB_PORT}` from service `loans-db`'s output `port`), which reads as a number"), "{}", port.message);
        let fix = port.fix.as_deref().unwrap();
        assert!(fix.starts_with("write `${quote}${DB_PORT}${quote}` and add `quote: '\"'` to `spec.postBuild.substitute` of Kustomization/flux-system/apps"), "{fix}");
        assert!(fix.contains("you can wrap the variable with a double quotes var"), "{fix}");
        assert!(findings[3].message.contains("`3` (`${RETRIES}` from its default)"), "{}", findings[3].message);
    }

    #[test]
    fn objects_that_opt_out_and_kustomizations_that_do_not_substitute_are_left_alone() {
        let disabled = DEPLOYMENT.replace(
            "  labels:\n    db-port",
            "  annotations:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\n  labels:\n    db-port",
        );
        let dir = crate::flux::files::tests::write_tree(&[("apps/loans.yaml", &disabled)]);
        let findings =
            check(&Texts::of_dir(dir.path()), &[applier(&["apps/loans.yaml"], &[("quote", "\"")])], &provided());
        assert_eq!(findings.len(), 1, "only the ConfigMap: {findings:#?}");
        let mut plain = applier(&["apps/loans.yaml"], &[]);
        plain.substitutes = false;
        assert!(check(&Texts::of_dir(dir.path()), &[plain], &provided()).is_empty());
    }
}
