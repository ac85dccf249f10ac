//! `${name}` templates in catalogue entries: container env, command, probes and outputs.

use std::collections::BTreeMap;

/// The variables a template uses, in order of appearance.
pub fn variables(template: &str) -> Vec<&str> {
    let mut found = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                found.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => break,
        }
    }
    found
}

/// Replaces every `${name}` with its value. Unknown names are left as they are; the catalogue
/// is checked for them when it is loaded.
pub fn render(template: &str, values: &BTreeMap<String, String>) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let name = &after[..end];
                match values.get(name) {
                    Some(value) => out.push_str(value),
                    None => out.push_str(&rest[start..start + 3 + end]),
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_known_and_keeps_unknown() {
        let values =
            BTreeMap::from([("host".to_string(), "127.0.0.1".to_string()), ("port".to_string(), "3306".to_string())]);
        assert_eq!(render("mysql://${host}:${port}/${db}", &values), "mysql://127.0.0.1:3306/${db}");
        assert_eq!(render("no vars", &values), "no vars");
        assert_eq!(render("open ${host", &values), "open ${host");
    }

    #[test]
    fn lists_variables() {
        assert_eq!(variables("${a}-${b.c}x${"), vec!["a", "b.c"]);
    }
}
