//! `devenv env`: the environment's keys with the addresses this machine uses, so a service run
//! from an IDE or a shell reads the same variables as in the cluster. Touches nothing but the
//! state file (and, for `--kubeconfig`, a kubeconfig of one context beside it).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Context, Error as CommandError};
use crate::cli::{EnvArgs, EnvFormat};
use crate::config;
use crate::envmap;
use crate::errors::Error;
use crate::naming;
use crate::providers::kubeconfig;
use crate::state::{self, State, Store};
use crate::substitutes;
use crate::ui::{self, ReporterExt};

/// What `env` prints: the variables, and the secret keys it left out.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Variables {
    pub env: String,
    pub profile: String,
    /// `--service`, when given.
    pub service: Option<String>,
    pub variables: BTreeMap<String, String>,
    /// Keys of the environment Secret left out without `--show-secrets`.
    pub hidden: Vec<String>,
}

pub async fn run(ctx: &Context, args: &EnvArgs) -> Result<(), Error> {
    let mut config = config::load(&ctx.selection, &ctx.cwd)?;
    let store = Store::for_env(&config.env)?;
    let state = match store.load()? {
        Some(state) if state.repo != config.repo => {
            return Err(state::Error::OtherRepo { env: config.env.clone(), other_repo: state.repo }.into());
        }
        Some(state) => state,
        None => return Err(CommandError::NotCreated { env: config.env.clone() }.into()),
    };
    // The ConfigMap holds the static keys of the profile the environment was brought up with
    // (when that profile can still be read).
    if ctx.selection.profile.is_none() && state.profile != config.profile_name {
        let selection = config::Selection { profile: Some(state.profile.clone()), ..ctx.selection.clone() };
        if let Ok(recorded) = config::load(&selection, &ctx.cwd) {
            config = recorded;
        }
    }
    let result = if args.kubeconfig {
        let path = kubeconfig_for(&config.env, &state, &store)?;
        Variables {
            env: config.env.clone(),
            profile: config.profile_name.clone(),
            service: None,
            variables: BTreeMap::from([(kubeconfig::KUBECONFIG_ENV.to_string(), path.display().to_string())]),
            hidden: Vec::new(),
        }
    } else {
        let runtime = substitutes::runtime::for_config(&config);
        let selected = match &args.service {
            Some(name) => vec![super::service(&config, name)?],
            None => config.services.iter().collect(),
        };
        for service in &selected {
            // In-cluster substitutes publish no ports here; their state is enough.
            let started =
                state.services.get(&service.name).is_some_and(|s| !s.host_ports.is_empty() || runtime.in_cluster());
            if !started {
                return Err(CommandError::NotStarted { env: config.env.clone(), service: service.name.clone() }.into());
            }
        }
        if runtime.in_cluster() {
            ctx.reporter().warning(&format!(
                "the substitutes of `{}` run in its cluster (`substitutes.runtime: cluster`): these are the addresses pods use, which this machine does not reach",
                config.env
            ));
        }
        let map = envmap::for_host(&config, &state, runtime.as_ref(), args.service.as_deref());
        let mut variables = map.config_map;
        let hidden = if args.show_secrets {
            variables.extend(map.secret);
            Vec::new()
        } else {
            map.secret.into_keys().collect()
        };
        Variables {
            env: config.env.clone(),
            profile: config.profile_name.clone(),
            service: args.service.clone(),
            variables,
            hidden,
        }
    };

    if ctx.json() {
        ui::print_result(&result);
        return Ok(());
    }
    let reporter = ctx.reporter();
    if !result.hidden.is_empty() {
        reporter.warning(&format!(
            "left out the secret key(s) {}; `--show-secrets` includes them",
            result.hidden.join(", ")
        ));
    }
    let (text, skipped) = render(&result, args.format);
    if !skipped.is_empty() {
        reporter.warning(&format!(
            "left out {} of the profile's `environment`: not a shell variable name",
            skipped.join(", ")
        ));
    }
    crate::out!("{text}");
    Ok(())
}

/// The kubeconfig that reaches the environment's cluster as its current context: the recorded
/// one when its current context is the cluster's already (sim, a fresh kind cluster), else a
/// file of that context alone in the environment's state directory.
fn kubeconfig_for(env: &str, state: &State, store: &Store) -> Result<PathBuf, CommandError> {
    let Some(cluster) = &state.cluster else {
        return Err(CommandError::NoCluster { env: env.to_string(), profile: state.profile.clone() });
    };
    let current = kubeconfig::read(&cluster.kubeconfig)
        .ok()
        .is_some_and(|config| config.current_context.as_deref() == Some(cluster.context.as_str()));
    if current {
        return Ok(cluster.kubeconfig.clone());
    }
    let extracted = kubeconfig::extract(&cluster.kubeconfig, &cluster.context)?;
    let path = store.dir().join("kubeconfig");
    let text = serde_yaml::to_string(&extracted).expect("a kubeconfig serialises");
    write_private(&path, &text).map_err(|source| CommandError::Write { path: path.clone(), source })?;
    Ok(path)
}

/// Writes a file only the user can read (it holds the cluster's credentials), atomically.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    let temp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&temp)?;
    file.write_all(text.as_bytes())?;
    std::fs::rename(&temp, path)
}

/// The variables in `format`, and the keys a shell could not take.
pub fn render(result: &Variables, format: EnvFormat) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut skipped = Vec::new();
    match format {
        EnvFormat::Json => {
            out = serde_json::to_string_pretty(&result.variables).expect("strings serialise");
            out.push('\n');
        }
        EnvFormat::Shell | EnvFormat::Dotenv => {
            for (key, value) in &result.variables {
                if !naming::is_variable_name(key) {
                    skipped.push(key.clone());
                } else if format == EnvFormat::Shell {
                    out.push_str(&format!("export {key}={}\n", shell_quote(value)));
                } else {
                    out.push_str(&format!("{key}={}\n", dotenv_quote(value)));
                }
            }
            if !result.hidden.is_empty() {
                out.push_str(&format!(
                    "# left out (secret; `devenv env --show-secrets` includes them): {}\n",
                    result.hidden.join(", ")
                ));
            }
        }
    }
    (out, skipped)
}

/// `'value'`, with each `'` written as `'\''`: nothing inside is expanded.
pub fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

/// A value as .env readers (docker compose, dotenv libraries) take it back unchanged: bare when
/// it is plain, in single quotes (literal) when it holds no `'` or line break, else in double
/// quotes with `\`, `"` and line breaks escaped.
pub fn dotenv_quote(value: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_-.,:/@+%=?&~^".contains(c);
    if !value.is_empty() && value.chars().all(plain) {
        value.to_string()
    } else if !value.contains(['\'', '\n', '\r']) {
        format!("'{value}'")
    } else {
        let escaped = value.replace('\\', r"\\").replace('"', "\\\"").replace('\n', r"\n").replace('\r', r"\r");
        format!("\"{escaped}\"")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn variables(pairs: &[(&str, &str)], hidden: &[&str]) -> Variables {
        Variables {
            env: "shop".into(),
            profile: "standalone".into(),
            service: None,
            variables: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            hidden: hidden.iter().map(|k| k.to_string()).collect(),
        }
    }

    #[test]
    fn shell_values_are_single_quoted_so_nothing_expands() {
        assert_eq!(shell_quote("127.0.0.1"), "'127.0.0.1'");
        assert_eq!(shell_quote("it's $HOME `x`"), r"'it'\''s $HOME `x`'");
        assert_eq!(shell_quote(""), "''");
    }

    #[test]
    fn dotenv_values_are_bare_when_plain_and_quoted_otherwise() {
        assert_eq!(dotenv_quote("mysql://app:pw@127.0.0.1:3306/orders"), "mysql://app:pw@127.0.0.1:3306/orders");
        assert_eq!(dotenv_quote("two words $HOME"), "'two words $HOME'");
        assert_eq!(dotenv_quote("it's"), "\"it's\"");
        assert_eq!(dotenv_quote("a\"b\nc"), r#""a\"b\nc""#);
        assert_eq!(dotenv_quote(""), "''");
    }

    #[test]
    fn each_format_prints_the_variables_and_names_what_it_left_out() {
        let result = variables(&[("DB_HOST", "127.0.0.1"), ("DB_PORT", "40213"), ("bad-key", "x")], &["DB_PASSWORD"]);
        let (shell, skipped) = render(&result, EnvFormat::Shell);
        assert_eq!(
            shell,
            "export DB_HOST='127.0.0.1'\nexport DB_PORT='40213'\n# left out (secret; `devenv env --show-secrets` includes them): DB_PASSWORD\n"
        );
        assert_eq!(skipped, ["bad-key"]);
        let (dotenv, _) = render(&result, EnvFormat::Dotenv);
        assert_eq!(
            dotenv,
            "DB_HOST=127.0.0.1\nDB_PORT=40213\n# left out (secret; `devenv env --show-secrets` includes them): DB_PASSWORD\n"
        );
        let (json, skipped) = render(&result, EnvFormat::Json);
        let parsed: BTreeMap<String, String> = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed.len(), 3, "JSON takes any key");
        assert!(skipped.is_empty());
    }
}
