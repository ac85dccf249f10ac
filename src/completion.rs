//! Values shell completion offers that depend on where it runs: the repository's profiles and
//! services, the environments in the state directory.
//!
//! The shell runs `COMPLETE=<shell> devenv -- <words>` on every TAB (`clap_complete`'s dynamic
//! completion, installed by `devenv completions SHELL`). Files are read without validation and
//! nothing here fails: whatever cannot be read offers nothing, since an error would be printed
//! into the user's command line.

use std::path::{Path, PathBuf};

use clap_complete::CompletionCandidate;
use serde::Deserialize;

use crate::config::{self, PROJECT_FILE};
use crate::state;

/// The variable that turns a run of devenv into a completion request.
pub const VAR: &str = "COMPLETE";

/// Answers a completion request and exits when this process is one; returns otherwise.
pub fn answer_if_asked() {
    clap_complete::CompleteEnv::with_factory(crate::cli::command).var(VAR).complete();
}

/// The script that registers devenv's completion with `shell`; it calls `devenv` on the PATH.
pub fn script(shell: clap_complete::Shell) -> String {
    let name = shell.to_string();
    let shells = clap_complete::env::Shells::builtins();
    let completer = shells.completer(&name).expect("every shell clap_complete generates for has a dynamic completer");
    let mut script = Vec::new();
    completer.write_registration(VAR, "devenv", "devenv", "devenv", &mut script).expect("writing to memory succeeds");
    if shell == clap_complete::Shell::Zsh {
        // Loaded from $fpath, the file is the body of `_devenv`, run on the first TAB: it
        // registers the completer, which then also answers this first TAB.
        script.extend_from_slice(
            b"if [ \"$funcstack[1]\" = \"_devenv\" ]; then\n    _clap_dynamic_completer_devenv \"$@\"\nfi\n",
        );
    }
    String::from_utf8_lossy(&script).into_owned()
}

/// `--profile`: the built-in profiles and the repository's `.devenv/profiles/*.yaml`.
pub fn profiles() -> Vec<CompletionCandidate> {
    let mut names: Vec<(String, &str)> = config::builtin_profiles().map(|n| (n.to_string(), "built-in")).collect();
    if let Some(repo) = repo() {
        for name in entry_names(&repo.join(".devenv/profiles")) {
            match names.iter_mut().find(|(known, _)| *known == name) {
                Some(entry) => entry.1 = "built-in, changed in .devenv/profiles",
                None => names.push((name, ".devenv/profiles")),
            }
        }
    }
    names.into_iter().map(|(name, help)| CompletionCandidate::new(name).help(Some(help.into()))).collect()
}

/// `logs SERVICE`: the services of devenv.yaml, their kinds as help.
pub fn services() -> Vec<CompletionCandidate> {
    #[derive(Deserialize)]
    struct Project {
        #[serde(default)]
        services: Vec<Service>,
    }
    #[derive(Deserialize)]
    struct Service {
        name: String,
        #[serde(default)]
        kind: Option<String>,
    }
    let Some(text) = repo().and_then(|repo| std::fs::read_to_string(repo.join(PROJECT_FILE)).ok()) else {
        return Vec::new();
    };
    let Ok(project) = serde_yaml::from_str::<Project>(&text) else { return Vec::new() };
    project.services.into_iter().map(|s| CompletionCandidate::new(s.name).help(s.kind.map(Into::into))).collect()
}

/// `--env`: the environments with a state file in the state directory.
pub fn environments() -> Vec<CompletionCandidate> {
    let Ok(dir) = state::envs_dir() else { return Vec::new() };
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().join("state.json").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.into_iter().map(CompletionCandidate::new).collect()
}

/// The repository completion runs in: `DEVENV_REPO`, else the nearest devenv.yaml at or above
/// the current directory. (`--repo` on the line being completed is not seen.)
fn repo() -> Option<PathBuf> {
    let explicit = std::env::var_os("DEVENV_REPO").map(PathBuf::from);
    let cwd = std::env::current_dir().ok()?;
    config::find_repo(explicit.as_deref(), &cwd).ok()
}

/// The names of the `*.yaml` and `*.yml` files in `dir`, sorted.
fn entry_names(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|ext| ext == "yaml" || ext == "yml"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shell_gets_a_script_that_calls_devenv_back() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
            clap_complete::Shell::PowerShell,
            clap_complete::Shell::Elvish,
        ] {
            let text = script(shell);
            assert!(text.contains("COMPLETE"), "{shell}: {text}");
            assert!(text.contains("devenv"), "{shell}: {text}");
        }
        assert!(script(clap_complete::Shell::Zsh).starts_with("#compdef devenv"));
    }

    #[test]
    fn profile_files_are_named_by_their_stem() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["b.yaml", "a.yml", "notes.txt", "a.yaml"] {
            std::fs::write(dir.path().join(file), "").unwrap();
        }
        assert_eq!(entry_names(dir.path()), ["a", "b"]);
        assert!(entry_names(&dir.path().join("missing")).is_empty());
    }
}
