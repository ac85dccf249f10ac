//! The user's `k3d` binary, run the way ctlptl runs it: found on `PATH`, its version checked,
//! its progress lines passed on. The argument lists are built apart from running them, so the
//! tests can check exactly what devenv asks of k3d.

use std::io;
use std::path::Path;
use std::process::Stdio;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::Error;

/// The oldest k3d that reads `k3d.io/v1alpha5` configurations with a full `registries.yaml`.
pub const MIN_VERSION: (u64, u64) = (5, 5);

/// The program devenv runs.
const PROGRAM: &str = "k3d";

/// One cluster of `k3d cluster list -o json` (k3d prints more; these are what devenv reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cluster {
    pub name: String,
    #[serde(default)]
    pub servers_count: u32,
    #[serde(default)]
    pub servers_running: u32,
}

/// `k3d version`.
pub fn version_args() -> Vec<String> {
    strings(&["version"])
}

/// `k3d cluster list -o json`: every k3d cluster of this Docker engine.
pub fn list_args() -> Vec<String> {
    strings(&["cluster", "list", "-o", "json"])
}

/// `k3d cluster create --config FILE`: the cluster, its registry and its kubeconfig context,
/// all from the file (the name too).
pub fn create_args(config: &Path) -> Vec<String> {
    vec!["cluster".into(), "create".into(), "--config".into(), config.to_string_lossy().into_owned()]
}

/// `k3d cluster start NAME`: the stopped containers of a cluster, as they were.
pub fn start_args(cluster: &str) -> Vec<String> {
    strings(&["cluster", "start", cluster])
}

/// `k3d cluster delete NAME`: its containers (the registry created with it too), its network
/// and its kubeconfig entries; named volumes stay.
pub fn delete_args(cluster: &str) -> Vec<String> {
    strings(&["cluster", "delete", cluster])
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// `k3d version` → `v5.9.0`; fails when k3d is missing or older than [`MIN_VERSION`].
/// Blocking (it answers at once), so `doctor`'s synchronous checks can use it too.
/// Asked once per run (the binary does not change meanwhile); a failure is asked again.
pub fn version() -> Result<String, Error> {
    static FOUND: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    crate::providers::container_cluster::asked_once(&FOUND, ask_version)
}

fn ask_version() -> Result<String, Error> {
    let args = version_args();
    let output = match std::process::Command::new(PROGRAM).args(&args).stdin(Stdio::null()).output() {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(source) => return Err(Error::Run { args: args.join(" "), source }),
    };
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if !output.status.success() {
        return Err(failed(&args.join(" "), &output.status, &String::from_utf8_lossy(&output.stderr)));
    }
    match parse_version(&text) {
        Some((version, numbers)) if numbers >= MIN_VERSION => Ok(version),
        _ => Err(Error::TooOld { found: text.lines().next().unwrap_or_default().to_string() }),
    }
}

/// `k3d version v5.9.0` (then `k3s version v1.33.1-k3s1 (default)`) → (`v5.9.0`, (5, 9)).
fn parse_version(text: &str) -> Option<(String, (u64, u64))> {
    let line = text.lines().find(|l| l.trim_start().starts_with("k3d version"))?;
    let word = line.split_whitespace().nth(2)?;
    let mut numbers = word.strip_prefix('v')?.split(['.', '-', '+']).map(|n| n.parse::<u64>());
    let major = numbers.next()?.ok()?;
    let minor = numbers.next()?.ok()?;
    Some((word.to_string(), (major, minor)))
}

/// The k3d clusters of this Docker engine.
pub async fn clusters() -> Result<Vec<Cluster>, Error> {
    let args = list_args();
    let text = run(&args).await?;
    parse_clusters(&text).map_err(|source| Error::List { args: args.join(" "), source })
}

fn parse_clusters(text: &str) -> Result<Vec<Cluster>, serde_json::Error> {
    // An engine without clusters may print nothing at all.
    if text.trim().is_empty() { Ok(Vec::new()) } else { serde_json::from_str(text.trim()) }
}

/// `k3d cluster create`; each line k3d prints goes to `progress`.
pub async fn create(config: &Path, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    streamed(&create_args(config), progress).await
}

/// `k3d cluster start`.
pub async fn start(cluster: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    streamed(&start_args(cluster), progress).await
}

/// `k3d cluster delete`.
pub async fn delete(cluster: &str, progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    streamed(&delete_args(cluster), progress).await
}

/// Runs k3d and returns its standard output.
async fn run(args: &[String]) -> Result<String, Error> {
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

/// Runs k3d, passing each line it prints to `progress`: k3d logs its progress on stdout and
/// its warnings and errors on stderr.
async fn streamed(args: &[String], progress: &(dyn Fn(&str) + Sync)) -> Result<(), Error> {
    let mut child = match Command::new(PROGRAM)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Error::Missing),
        Err(source) => return Err(Error::Run { args: args.join(" "), source }),
    };
    let (stdout, stderr) = tokio::join!(lines(child.stdout.take(), progress), lines(child.stderr.take(), progress));
    let status = child.wait().await.map_err(|source| Error::Run { args: args.join(" "), source })?;
    if !status.success() {
        return Err(failed(&args.join(" "), &status, &format!("{stdout}{stderr}")));
    }
    Ok(())
}

/// Every non-empty line of a stream, each passed to `progress` as it comes.
async fn lines(stream: Option<impl AsyncRead + Unpin>, progress: &(dyn Fn(&str) + Sync)) -> String {
    let mut text = String::new();
    let Some(stream) = stream else { return text };
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let line = line.trim();
        if !line.is_empty() {
            progress(line);
            text.push_str(line);
            text.push('\n');
        }
    }
    text
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
    fn the_commands_are_exactly_these() {
        assert_eq!(version_args(), ["version"]);
        assert_eq!(list_args(), ["cluster", "list", "-o", "json"]);
        assert_eq!(
            create_args(Path::new("/state/envs/shop/k3d-config.yaml")),
            ["cluster", "create", "--config", "/state/envs/shop/k3d-config.yaml"]
        );
        assert_eq!(start_args("devenv-shop"), ["cluster", "start", "devenv-shop"]);
        assert_eq!(delete_args("devenv-shop"), ["cluster", "delete", "devenv-shop"]);
    }

    #[test]
    fn versions_are_read_from_k3ds_own_words() {
        let text = "k3d version v5.9.0\nk3s version v1.33.1-k3s1 (default)\n";
        assert_eq!(parse_version(text), Some(("v5.9.0".into(), (5, 9))));
        assert_eq!(parse_version("k3d version v5.5.0-rc.1\n"), Some(("v5.5.0-rc.1".into(), (5, 5))));
        assert!(parse_version("k3d version v5.4.9\n").unwrap().1 < MIN_VERSION);
        assert!(parse_version("k3d version v4.4.8\n").unwrap().1 < MIN_VERSION);
        // A build without a version stamp says `v5-dev`: its features cannot be known.
        assert_eq!(parse_version("k3d version v5-dev\n"), None);
        assert_eq!(parse_version("something else"), None);
    }

    #[test]
    fn the_cluster_list_is_read_from_k3ds_json() {
        let text = r#"[{"name":"devenv-shop","network":{"name":"k3d-devenv-shop","id":"abc"},"nodes":[{"name":"k3d-devenv-shop-server-0","role":"server"}],"serversRunning":1,"serversCount":1,"agentsRunning":0,"agentsCount":0,"hasLoadbalancer":true},{"name":"other","serversRunning":0,"serversCount":1,"agentsRunning":0,"agentsCount":0}]"#;
        assert_eq!(
            parse_clusters(text).unwrap(),
            [
                Cluster { name: "devenv-shop".into(), servers_count: 1, servers_running: 1 },
                Cluster { name: "other".into(), servers_count: 1, servers_running: 0 },
            ]
        );
        assert_eq!(parse_clusters("[]\n").unwrap(), []);
        assert_eq!(parse_clusters("").unwrap(), []);
        assert!(parse_clusters("NAME SERVERS").is_err());
    }
}
