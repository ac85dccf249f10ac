//! The user's `kind` binary, run the way ctlptl and Tilt run it: found on `PATH`, its version
//! checked, its progress lines passed on.

use std::io;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use super::Error;

/// The oldest kind whose cluster configuration and containerd `certs.d` wiring devenv relies on.
pub const MIN_VERSION: (u64, u64) = (0, 20);

/// The program devenv runs (tests put a test build first on `PATH`).
const PROGRAM: &str = "kind";

/// `kind version` → `v0.33.0`; fails when kind is missing or older than [`MIN_VERSION`].
/// Blocking (it answers at once), so `doctor`'s synchronous checks can use it too.
/// Asked once per run (the binary does not change meanwhile); a failure is asked again.
pub fn version() -> Result<String, Error> {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    crate::providers::container_cluster::asked_once(&FOUND, ask_version)
}

fn ask_version() -> Result<String, Error> {
    let output = match std::process::Command::new(PROGRAM).arg("version").stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(source) => return Err(Error::Run { args: "version".into(), source }),
    };
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        return Err(failed("version", &output.status, &String::from_utf8_lossy(&output.stderr)));
    }
    match parse_version(&text) {
        Some((version, numbers)) if numbers >= MIN_VERSION => Ok(version),
        _ => Err(Error::TooOld { found: text }),
    }
}

/// `kind v0.33.0 go1.26.1 linux/amd64` → (`v0.33.0`, (0, 33)).
fn parse_version(text: &str) -> Option<(String, (u64, u64))> {
    let word =
        text.split_whitespace().find(|w| w.starts_with('v') && w[1..].starts_with(|c: char| c.is_ascii_digit()))?;
    let mut numbers = word[1..].split(['.', '-', '+']).map(|n| n.parse::<u64>());
    let major = numbers.next()?.ok()?;
    let minor = numbers.next()?.ok()?;
    Some((word.to_string(), (major, minor)))
}

/// The kind clusters of this Docker engine.
pub async fn clusters() -> Result<Vec<String>, Error> {
    let text = run(&["get", "clusters"]).await?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// The node containers of a cluster.
pub async fn nodes(cluster: &str) -> Result<Vec<String>, Error> {
    let text = run(&["get", "nodes", "--name", cluster]).await?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// `kind create cluster`; each line kind prints goes to `progress`.
pub async fn create(cluster: &str, config: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    let config = config.to_string_lossy();
    streamed(&["create", "cluster", "--name", cluster, "--config", &config], progress).await
}

/// `kind delete cluster`: removes the node containers and the cluster's kubeconfig entries.
pub async fn delete(cluster: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    streamed(&["delete", "cluster", "--name", cluster], progress).await
}

/// Runs kind and returns its standard output.
async fn run(args: &[&str]) -> Result<String, Error> {
    let output = match Command::new(PROGRAM).args(args).stdin(Stdio::null()).output().await {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(source) => return Err(Error::Run { args: args.join(" "), source }),
    };
    if !output.status.success() {
        return Err(failed(&args.join(" "), &output.status, &String::from_utf8_lossy(&output.stderr)));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs kind, passing each line it prints (it reports on stderr) to `progress`.
async fn streamed(args: &[&str], progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    let mut child = match Command::new(PROGRAM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(source) => return Err(Error::Run { args: args.join(" "), source }),
    };
    let mut output = String::new();
    if let Some(stderr) = child.stderr.take() {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = line.trim();
            if !line.is_empty() {
                progress(line);
                output.push_str(line);
                output.push('\n');
            }
        }
    }
    let status = child.wait().await.map_err(|source| Error::Run { args: args.join(" "), source })?;
    if !status.success() {
        return Err(failed(&args.join(" "), &status, &output));
    }
    Ok(())
}

fn failed(args: &str, status: &std::process::ExitStatus, output: &str) -> Error {
    let lines: Vec<&str> = output.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(15)..].join("\n");
    Error::Command { args: args.to_string(), status: status.to_string(), output: tail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_kinds_own_words() {
        assert_eq!(parse_version("kind v0.33.0 go1.26.1 linux/amd64"), Some(("v0.33.0".into(), (0, 33))));
        assert_eq!(
            parse_version("kind v0.20.0-alpha+abc go1.20 linux/arm64"),
            Some(("v0.20.0-alpha+abc".into(), (0, 20)))
        );
        assert_eq!(parse_version("kind version unknown"), None);
        assert!(parse_version("kind v0.19.0 go1.20 linux/amd64").unwrap().1 < MIN_VERSION);
    }
}
