//! `devenv doctor`: checks of this machine, each with its fix.

use std::path::Path;

use serde::Serialize;

use super::Context;
use crate::config;
use crate::errors::{self, Error};
use crate::ports;
use crate::providers;
use crate::state::Store;
use crate::substitutes::{self, SubstituteRuntime};
use crate::ui;

/// Minimum free disk space before doctor fails, and before it warns.
const DISK_FAIL_BYTES: u64 = 1 << 30;
const DISK_WARN_BYTES: u64 = 5 << 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn ok(name: &str, detail: String) -> Self {
        Check { name: name.to_string(), verdict: Verdict::Ok, detail, fix: None }
    }
    fn problem(name: &str, verdict: Verdict, detail: String, fix: impl Into<String>) -> Self {
        Check { name: name.to_string(), verdict, detail, fix: Some(fix.into()) }
    }
}

/// Fails the command (exit 1) when a check fails; warnings pass.
#[derive(Debug, thiserror::Error)]
#[error("{0} check(s) failed")]
pub struct Failed(pub usize);

pub async fn run(ctx: &Context) -> Result<(), Error> {
    let mut checks = Vec::new();
    let config = config::load(&ctx.selection, &ctx.cwd);
    // The profile's substitute runtime; Docker when the configuration cannot tell.
    let runtime: Box<dyn SubstituteRuntime> = match &config {
        Ok(config) => substitutes::runtime::for_config(config),
        Err(_) => Box::new(substitutes::runtime::DockerRuntime::default()),
    };
    let runtime_ok = match runtime.check().await {
        Ok(detail) => {
            checks.push(Check::ok(runtime.name(), detail));
            true
        }
        Err(error) => {
            let error = Error::from(error);
            let fix = errors::diagnose(&error).hint.unwrap_or_default();
            checks.push(Check::problem(runtime.name(), Verdict::Fail, error.to_string(), fix));
            false
        }
    };

    match &config {
        Ok(config) => checks.push(Check::ok(
            "config",
            format!(
                "{} is valid (environment `{}`, profile `{}`)",
                config::PROJECT_FILE,
                config.env,
                config.profile_name
            ),
        )),
        Err(config::Error::ProjectNotFound { .. }) => checks.push(Check::problem(
            "config",
            Verdict::Warn,
            format!("no {} here", config::PROJECT_FILE),
            "run doctor inside the GitOps repository, or pass --repo DIR, to check its configuration",
        )),
        Err(error) => checks.push(Check::problem(
            "config",
            Verdict::Fail,
            error.to_string(),
            "fix the file; `devenv plan` shows the full error",
        )),
    }

    // The profile's cluster must be usable as `up` needs it; other providers' prerequisites
    // are only worth a warning.
    let provider = config.as_ref().ok().map(|config| {
        let dir = Store::for_env(&config.env).map(|store| store.dir().to_path_buf()).unwrap_or_default();
        (config.profile.cluster.provider, providers::for_config(config, &dir))
    });
    let wanted = provider.as_ref().map(|(kind, _)| *kind);
    match provider {
        Some((kind, Ok(Some(provider)))) => checks.push(match provider.preflight().await {
            Ok(()) => Check::ok(kind.as_str(), format!("the `{}` cluster can be used", kind.as_str())),
            Err(error) => problem(kind.as_str(), Verdict::Fail, Error::from(error)),
        }),
        Some((kind, Err(error))) => checks.push(problem(kind.as_str(), Verdict::Fail, Error::from(error))),
        _ => {}
    }
    for (kind, ready) in providers::prerequisites() {
        if Some(kind) == wanted {
            continue;
        }
        checks.push(match ready {
            Ok(detail) => Check::ok(kind.as_str(), detail),
            Err(error) => problem(kind.as_str(), Verdict::Warn, Error::from(error)),
        });
    }

    let mut disk_paths = Vec::new();
    if let Ok(store) = Store::for_env("doctor") {
        let root = store.dir().parent().and_then(Path::parent).map(Path::to_path_buf);
        disk_paths.extend(root.map(|r| ("state directory", r)));
    }
    if runtime_ok && let Some(root) = runtime.data_dir().await {
        disk_paths.push(("Docker data", root.into()));
    }
    for (what, path) in disk_paths {
        checks.push(disk_check(what, &path));
    }

    if let Ok(config) = &config {
        checks.extend(port_checks(config, runtime_ok.then_some(runtime.as_ref())).await);
    }

    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if ctx.json() {
        ui::print_result(&serde_json::json!({"checks": checks, "failed": failed}));
    } else {
        for check in &checks {
            let word = match check.verdict {
                Verdict::Ok => "ok",
                Verdict::Warn => "warn",
                Verdict::Fail => "FAIL",
            };
            crate::outln!("{word:>5}  {:<8} {}", check.name, check.detail);
            if let Some(fix) = &check.fix {
                crate::outln!("{:>5}  {:<8} fix: {fix}", "", "");
            }
        }
    }
    if failed > 0 { Err(Error::Doctor(Failed(failed))) } else { Ok(()) }
}

fn disk_check(what: &str, path: &Path) -> Check {
    // The nearest existing ancestor tells which filesystem the path will be on.
    let existing = path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    match free_bytes(existing) {
        Some(free) if free < DISK_FAIL_BYTES => Check::problem(
            "disk",
            Verdict::Fail,
            format!("{what} ({}): only {} free", path.display(), human_bytes(free)),
            "free some space (`docker system prune` removes unused images and containers)",
        ),
        Some(free) if free < DISK_WARN_BYTES => Check::problem(
            "disk",
            Verdict::Warn,
            format!("{what} ({}): {} free", path.display(), human_bytes(free)),
            "substitute images and data take a few GiB; consider freeing space",
        ),
        Some(free) => Check::ok("disk", format!("{what} ({}): {} free", path.display(), human_bytes(free))),
        None => Check::problem(
            "disk",
            Verdict::Warn,
            format!("cannot read free space of {}", path.display()),
            "check the path exists",
        ),
    }
}

fn free_bytes(path: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a properly sized out-parameter.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn human_bytes(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

/// A failed check with the error's own hint as its fix.
fn problem(name: &str, verdict: Verdict, error: Error) -> Check {
    let fix = errors::diagnose(&error).hint.unwrap_or_default();
    Check::problem(name, verdict, error.to_string(), fix)
}

/// Pinned and remembered ports must be free, or held by the environment's own container.
async fn port_checks(config: &config::Config, runtime: Option<&dyn SubstituteRuntime>) -> Vec<Check> {
    let remembered = Store::for_env(&config.env).ok().and_then(|s| s.load().ok().flatten());
    let mut checks = Vec::new();
    for service in &config.services {
        let main = &service.substitute.main_port;
        let pinned = service.port;
        let kept = remembered
            .as_ref()
            .and_then(|s| s.services.get(&service.name))
            .and_then(|s| s.host_ports.get(main))
            .copied();
        let Some(port) = pinned.or(kept) else {
            continue;
        };
        let ours = match runtime {
            Some(runtime) => runtime
                .inspect(&config.env, service)
                .await
                .ok()
                .flatten()
                .filter(|c| c.running)
                .and_then(|c| c.ports.get(&service.substitute.ports[main]).copied()),
            None => None,
        };
        let check = if ours == Some(port) {
            Check::ok("ports", format!("127.0.0.1:{port} is held by `{}`'s own container", service.name))
        } else if ports::is_free(port) {
            Check::ok("ports", format!("127.0.0.1:{port} for `{}` is free", service.name))
        } else if pinned.is_some() {
            Check::problem(
                "ports",
                Verdict::Fail,
                format!("127.0.0.1:{port}, pinned for `{}`, is taken by another program", service.name),
                format!("stop the program holding it (`ss -ltnp 'sport = :{port}'`) or change `port:` in devenv.yaml"),
            )
        } else {
            Check::problem(
                "ports",
                Verdict::Warn,
                format!("127.0.0.1:{port}, remembered for `{}`, is taken by another program", service.name),
                "`devenv up` will move the service to a free port",
            )
        };
        checks.push(check);
    }
    checks
}
