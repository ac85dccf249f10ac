//! Secrets and parameters declared with their values in devenv.yaml: each has exactly one
//! source (`value`, `generate`, `json`, `rds`), only the fields its kind takes, and
//! `${SERVICE.OUTPUT}` references to services and outputs that exist.

use serde_json::Value;

use super::catalogue::CreateResource;
use super::project::{DeclaredResource, ResourceConfig};
use super::{Error, Location, Problem, Service, output_names, template};

/// The outputs `rds:` reads from a database service, and the secret's key for each.
pub const RDS_SHAPE: [(&str, &str); 6] = [
    ("username", "username"),
    ("password", "password"),
    ("engine", "engine"),
    ("host", "host"),
    ("port", "port"),
    ("dbname", "database"),
];

fn invalid(at: &dyn Fn(&str) -> Location, problem: Problem, field: String, message: String, hint: &str) -> Error {
    Error::Invalid { problem, at: at(&field), field, message, hint: Some(hint.to_string()) }
}

/// One entry of a service's `resources:`, on its own: a name alone where the kind wants one, a
/// declaration with one source of its value where the kind makes secrets or parameters.
pub(super) fn check_entry(
    entry: &ResourceConfig,
    kind: &str,
    create: &CreateResource,
    field: &str,
    at: &dyn Fn(&str) -> Location,
) -> Result<(), Error> {
    let noun = create.noun();
    let sources_hint =
        "give exactly one of `value: TEXT`, `generate: password`, `json: {KEY: VALUE, …}` or `rds: DATABASE-SERVICE`";
    match (entry, create.has_value()) {
        (ResourceConfig::Name(name), true) => Err(invalid(
            at,
            Problem::ResourceValue,
            field.to_string(),
            format!("{noun} `{name}` has no value"),
            &format!("write it as a mapping: `- name: {name}` and {sources_hint}"),
        )),
        (ResourceConfig::Declared(declared), false) => Err(invalid(
            at,
            Problem::NotApplicable,
            field.to_string(),
            format!("`{kind}` {noun}s take only a name, not a value"),
            &format!("write the {noun}'s name alone, e.g. `- {}`", declared.name),
        )),
        (ResourceConfig::Name(_), false) => Ok(()),
        (ResourceConfig::Declared(declared), true) => {
            let given: Vec<&str> = [
                ("value", declared.value.is_some()),
                ("generate", declared.generate.is_some()),
                ("json", declared.json.is_some()),
                ("rds", declared.rds.is_some()),
            ]
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect();
            if given.len() != 1 {
                let message = match given.as_slice() {
                    [] => format!("{noun} `{}` has no value", declared.name),
                    _ => format!("{noun} `{}` has {} values (`{}`)", declared.name, given.len(), given.join("`, `")),
                };
                return Err(invalid(at, Problem::ResourceValue, field.to_string(), message, sources_hint));
            }
            if declared.parameter_type.is_some() && !matches!(create, CreateResource::SsmParameter { .. }) {
                return Err(invalid(
                    at,
                    Problem::NotApplicable,
                    format!("{field}.type"),
                    format!("`{kind}` {noun}s have no `type`"),
                    "remove `type:`; only `ssm-parameter-store` parameters have one (`String`, `SecureString`, `StringList`)",
                ));
            }
            Ok(())
        }
    }
}

/// Every `${SERVICE.OUTPUT}` and `rds:` of every declaration names a service of devenv.yaml
/// and an output it has; `rds:` names a database.
pub(super) fn check(services: &[Service], at: &dyn Fn(&str) -> Location) -> Result<(), Error> {
    for (i, service) in services.iter().enumerate() {
        for (j, name) in service.resources.iter().enumerate() {
            let Some(declared) = service.declared.get(name) else { continue };
            let field = format!("services[{i}].resources[{j}]");
            for (path, text) in templates(declared) {
                for reference in template::variables(text) {
                    check_reference(services, reference, &format!("{field}.{path}"), at)?;
                }
            }
            if let Some(database) = &declared.rds {
                check_database(services, database, &format!("{field}.rds"), at)?;
            }
        }
    }
    Ok(())
}

/// The templated strings of a declaration, with their paths under it.
pub fn templates(declared: &DeclaredResource) -> Vec<(String, &str)> {
    fn walk<'a>(path: String, value: &'a Value, out: &mut Vec<(String, &'a str)>) {
        match value {
            Value::String(text) => out.push((path, text)),
            Value::Array(items) => {
                items.iter().enumerate().for_each(|(i, item)| walk(format!("{path}[{i}]"), item, out))
            }
            Value::Object(map) => map.iter().for_each(|(key, item)| walk(format!("{path}.{key}"), item, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some(value) = &declared.value {
        out.push(("value".to_string(), value.as_str()));
    }
    if let Some(json) = &declared.json {
        json.iter().for_each(|(key, item)| walk(format!("json.{key}"), item, &mut out));
    }
    out
}

fn check_reference(
    services: &[Service],
    reference: &str,
    field: &str,
    at: &dyn Fn(&str) -> Location,
) -> Result<(), Error> {
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let Some((service_name, output)) = reference.split_once('.') else {
        return Err(invalid(
            at,
            Problem::UnknownReference,
            field.to_string(),
            format!("`${{{reference}}}` names no service's output"),
            &format!(
                "write `${{SERVICE.OUTPUT}}`, e.g. `${{{}.host}}`; services: {}",
                names.first().copied().unwrap_or("orders-db"),
                names.join(", ")
            ),
        ));
    };
    let Some(service) = services.iter().find(|s| s.name == service_name) else {
        return Err(invalid(
            at,
            Problem::UnknownReference,
            field.to_string(),
            format!("`${{{reference}}}`: devenv.yaml has no service `{service_name}`"),
            &format!("name one of the services: {}", names.join(", ")),
        ));
    };
    let outputs = output_names(&service.substitute, &service.resources);
    if !outputs.contains(output) {
        let known: Vec<&str> = outputs.iter().map(String::as_str).collect();
        return Err(invalid(
            at,
            Problem::UnknownReference,
            field.to_string(),
            format!("`${{{reference}}}`: `{}` has no output `{output}`", service.kind),
            &super::known_list("outputs", &known, output),
        ));
    }
    Ok(())
}

fn check_database(services: &[Service], name: &str, field: &str, at: &dyn Fn(&str) -> Location) -> Result<(), Error> {
    let databases: Vec<&str> = services
        .iter()
        .filter(|s| RDS_SHAPE.iter().all(|(_, output)| s.substitute.outputs.contains_key(*output)))
        .map(|s| s.name.as_str())
        .collect();
    let choose = if databases.is_empty() {
        "add a database service (`rds-mariadb`, `rds-mysql`, `rds-postgres`, `aurora-postgres`) and name it".to_string()
    } else {
        format!("name a database service: {}", databases.join(", "))
    };
    let Some(service) = services.iter().find(|s| s.name == name) else {
        return Err(invalid(
            at,
            Problem::UnknownReference,
            field.to_string(),
            format!("devenv.yaml has no service `{name}`"),
            &choose,
        ));
    };
    let missing: Vec<&str> = (RDS_SHAPE.iter())
        .map(|(_, output)| *output)
        .filter(|output| !service.substitute.outputs.contains_key(*output))
        .collect();
    if !missing.is_empty() {
        return Err(invalid(
            at,
            Problem::NotADatabase,
            field.to_string(),
            format!("`{name}` (`{}`) is not a database: it has no output `{}`", service.kind, missing.join("`, `")),
            &choose,
        ));
    }
    Ok(())
}
