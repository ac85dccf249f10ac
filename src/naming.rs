//! Names of everything devenv creates, and the rules they follow.
//!
//! Names double as DNS labels (Kubernetes objects, container hostnames), so they are
//! lowercase alphanumerics and `-`, at most 63 characters.

pub const MAX_OBJECT_LEN: usize = 63;
pub const MAX_ENV_LEN: usize = 30;
pub const MAX_SERVICE_LEN: usize = 30;

pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "devenv";
pub const LABEL_ENV: &str = "devenv.io/env";
pub const LABEL_SERVICE: &str = "devenv.io/service";
pub const LABEL_SPEC_HASH: &str = "devenv.io/spec-hash";

/// The labels every object of environment `env` carries, as a label selector.
pub fn env_selector(env: &str) -> String {
    format!("{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_ENV}={env}")
}

/// Checks a DNS-1123 label; the error says what is wrong.
pub fn check_label(value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".to_string());
    }
    if value.len() > max {
        return Err(format!("is longer than {max} characters"));
    }
    if let Some(c) = value.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Err(format!("contains `{c}`"));
    }
    if value.starts_with('-') || value.ends_with('-') {
        return Err("starts or ends with `-`".to_string());
    }
    Ok(())
}

/// The nearest valid label: lowercase, other characters to `-`, trimmed to `max`.
pub fn sanitize(value: &str, max: usize) -> String {
    let mut out = String::new();
    for c in value.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' };
        if !(c == '-' && (out.is_empty() || out.ends_with('-'))) {
            out.push(c);
        }
    }
    out.truncate(max);
    let trimmed = out.trim_end_matches('-');
    if trimmed.is_empty() { "env".to_string() } else { trimmed.to_string() }
}

/// `devenv-<env>`: the name of what an environment has one of, where nothing else names it —
/// its kind or k3d cluster, its namespace in a shared cluster, the sim's context.
pub fn env_scoped(env: &str) -> String {
    format!("devenv-{env}")
}

pub fn container_name(env: &str, service: &str) -> String {
    format!("devenv-{env}-{service}")
}

pub fn volume_name(env: &str, service: &str) -> String {
    format!("devenv-{env}-{service}-data")
}

/// A Flux substitution variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_variable_name(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether an image reference names a tag or digest (`repo:tag`, `repo@sha256:…`), as opposed
/// to a registry port (`host:5000/repo`).
pub fn image_has_tag(image: &str) -> bool {
    let last = image.rsplit('/').next().unwrap_or(image);
    last.contains(':') || last.contains('@')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(check_label("shop-1", 63).is_ok());
        assert_eq!(check_label("Shop", 63).unwrap_err(), "contains `S`");
        assert_eq!(check_label("-shop", 63).unwrap_err(), "starts or ends with `-`");
        assert_eq!(check_label("", 63).unwrap_err(), "is empty");
        assert_eq!(check_label(&"a".repeat(31), 30).unwrap_err(), "is longer than 30 characters");
        assert!(check_label(&"a".repeat(30), 30).is_ok());
    }

    #[test]
    fn sanitizes_to_a_valid_label() {
        assert_eq!(sanitize("My_Shop!!", 63), "my-shop");
        assert_eq!(sanitize("__", 63), "env");
        let long = sanitize(&"ab-".repeat(40), 30);
        assert!(check_label(&long, 30).is_ok(), "{long}");
    }

    #[test]
    fn object_names() {
        assert_eq!(container_name("shop", "orders-db"), "devenv-shop-orders-db");
        assert_eq!(volume_name("shop", "orders-db"), "devenv-shop-orders-db-data");
    }

    #[test]
    fn variable_names() {
        assert!(is_variable_name("DB_HOST"));
        assert!(is_variable_name("_x1"));
        assert!(!is_variable_name("1DB"));
        assert!(!is_variable_name("DB-HOST"));
        assert!(!is_variable_name(""));
    }

    #[test]
    fn image_tags() {
        assert!(image_has_tag("mariadb:11.4"));
        assert!(image_has_tag("registry:5000/team/mariadb:1"));
        assert!(image_has_tag("mariadb@sha256:abc"));
        assert!(!image_has_tag("registry:5000/team/mariadb"));
        assert!(!image_has_tag("docker.io/library/mariadb"));
    }
}
