//! CLI tier: the real binary's help, errors and exit codes. No Docker engine needed: tests
//! that touch Docker point DOCKER_HOST at a socket that does not exist (or at one that never
//! answers, to keep a command busy).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::shape::{self, Shapes};
use common::{TestRepo, devenv_in};
use predicates::prelude::*;
use serde_json::{Value, json};

const NO_DOCKER: &str = "unix:///nonexistent/docker.sock";
const SERVICE: &str = "  - name: orders-db\n    kind: rds-mariadb\n";

#[test]
fn every_command_has_help_with_examples() {
    for command in ["up", "down", "status", "plan", "doctor", "env", "logs", "completions", "man", "version"] {
        let dir = tempfile::tempdir().unwrap();
        devenv_in(dir.path())
            .args([command, "--help"])
            .assert()
            .success()
            .stdout(predicate::str::contains("Examples:"))
            .stdout(predicate::str::contains("--profile"));
    }
}

#[test]
fn no_project_file_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    devenv_in(dir.path())
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV001]: no devenv.yaml in"))
        .stderr(predicate::str::contains(
            "hint: run devenv inside a repository with a devenv.yaml, or pass `--repo DIR`",
        ));
}

#[test]
fn bad_config_fails_with_its_location_and_creates_nothing() {
    let repo = TestRepo::new("t-cli-bad", "  - name: orders-db\n    kind: rds-mariadbb\n");
    repo.devenv()
        .arg("up")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV003]: devenv.yaml:11:11: services[0].kind: unknown substitute kind `rds-mariadbb`",
        ))
        .stderr(predicate::str::contains("did you mean `rds-mariadb`?"));
    assert!(!repo.state_file().exists(), "nothing is recorded for an invalid config");
}

#[test]
fn errors_are_json_with_output_json() {
    let repo = TestRepo::new("t-cli-json", "  - name: Orders\n    kind: rds-mariadb\n");
    let output = repo.devenv().args(["plan", "--output", "json"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let error = common::result_json(&output.stdout);
    assert_eq!(error["event"], "error");
    assert_eq!(error["error"]["id"], "DEV005");
    assert!(error["error"]["message"].as_str().unwrap().contains("services[0].name"));
}

#[test]
fn a_preview_profile_is_for_preview_commands_and_they_take_no_other() {
    let repo = TestRepo::new("t-cli-preview", SERVICE);
    repo.devenv()
        .args(["up", "--profile", "preview"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV040]: profile `preview` makes pull-request previews (`provider: eks-namespace`), not environments of `devenv up`",
        ))
        .stderr(predicate::str::contains("`devenv preview up --pr N`"));
    assert!(!repo.state_file().exists());
    repo.devenv()
        .args(["preview", "list", "--profile", "standalone"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV077]: profile `standalone` uses the `none` provider; `devenv preview` needs a profile with `provider: eks-namespace`",
        ));
    repo.devenv()
        .args(["preview", "down", "--pr", "3", "--env", "mine"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV012]: a preview is named after its pull request"));
    // Bad input stops before the cluster is asked anything (the profile names none here).
    repo.devenv()
        .args(["preview", "up", "--pr", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV070]: the pull request number must be at least 1"));
    repo.devenv()
        .args(["preview", "up", "--pr", "4", "--sha", "not-a-commit"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV070]: `not-a-commit` is not a commit"));
    repo.devenv().args(["preview", "gc", "--open-prs", "1,x"]).assert().code(2).stderr(predicate::str::contains(
        "invalid value '1,x' for '--open-prs <N,N,…>': `x` is not a pull request number",
    ));
    // `preview up` needs the registry CI pushes to; the built-in profile cannot know it.
    repo.devenv()
        .args(["preview", "up", "--pr", "4", "--sha", "abcdef1"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV010]: the profile names no registry (`registry.url`)"))
        .stderr(predicate::str::contains(".devenv/profiles/preview.yaml"));
}

#[test]
fn configuration_errors_point_at_the_key_to_change() {
    let repo = TestRepo::new("t-cli-edges", "  - name: orders-db\n    kind: rds-mariadb\n    port: 0\n");
    let devenv_yaml = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    let line_of = |needle: &str| devenv_yaml.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let plan = |repo: &TestRepo| repo.devenv().arg("plan").env("DOCKER_HOST", NO_DOCKER).assert().code(2);
    // Port 0 would leave `up` waiting for a port that is never published.
    plan(&repo).stderr(predicate::str::contains(format!(
        "error[DEV010]: devenv.yaml:{}:11: services[0].port: port 0 is not a port devenv can publish on",
        line_of("port: 0")
    )));
    // An unknown field is shown at its key, not at its value.
    repo.write("devenv.yaml", &devenv_yaml.replace("    port: 0\n", "    prot: 5432\n"));
    plan(&repo).stderr(predicate::str::contains(format!(
        "devenv.yaml:{}:5: services[0].prot: unknown field `prot`",
        line_of("port: 0")
    )));
    // A key written twice is shown at the second twin, the one to remove.
    repo.write("devenv.yaml", &format!("{}project: other\n", devenv_yaml.replace("    port: 0\n", "")));
    let lines = devenv_yaml.lines().count();
    plan(&repo)
        .stderr(predicate::str::contains(format!("devenv.yaml:{lines}:1: duplicate entry with key \"project\"")));
}

#[test]
fn a_broken_profile_breaks_only_the_commands_that_use_it() {
    let repo = TestRepo::new("t-cli-broken-profile", SERVICE);
    repo.write(".devenv/profiles/broken.yaml", "cluster: [\n");
    let output = repo.devenv().arg("plan").env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    repo.devenv()
        .args(["plan", "--profile", "broken"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error[DEV002]: .devenv/profiles/broken.yaml:2:1:"));
}

#[test]
fn unreachable_docker_names_the_fix() {
    let repo = TestRepo::new("t-cli-nodocker", SERVICE);
    repo.devenv()
        .arg("up")
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!("error[DEV020]: cannot reach the Docker engine at `{NO_DOCKER}`")))
        .stderr(predicate::str::contains("hint: start the Docker engine"));
    assert!(!repo.state_file().exists(), "nothing is recorded when Docker is unreachable");
}

#[test]
fn plan_without_docker_shows_what_up_would_create() {
    let repo = TestRepo::new("t-cli-plan", SERVICE);
    let output = repo.devenv().arg("plan").env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(r"127\.0\.0\.1:\d+", "127.0.0.1:[PORT]");
    settings.add_filter(r"new port \d+", "new port [PORT]");
    settings.bind(|| insta::assert_snapshot!(stdout));
    assert!(String::from_utf8_lossy(&output.stderr).contains("showing the plan as if nothing exists yet"));
    assert!(!repo.state_file().exists(), "plan records nothing");
}

#[test]
fn plan_as_json() {
    let repo = TestRepo::new("t-cli-planjson", SERVICE);
    let output = repo.devenv().args(["plan", "--output", "json"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    assert!(output.status.success());
    let plan = common::result_json(&output.stdout);
    assert_eq!(plan["event"], "result");
    assert_eq!(plan["services"][0]["action"], "create");
    assert_eq!(plan["services"][0]["container"], "devenv-t-cli-planjson-orders-db");
    assert_eq!(plan["cluster"]["provider"], "none");
}

#[test]
fn down_on_nothing_is_a_no_op() {
    let repo = TestRepo::new("t-cli-down", SERVICE);
    repo.devenv()
        .arg("down")
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .success()
        .stdout(predicate::str::contains("nothing to remove"));
    assert!(!repo.state.path().join("envs/t-cli-down").exists(), "the lock leaves no trace");
}

#[test]
fn down_works_with_a_broken_config_when_the_env_is_named() {
    let repo = TestRepo::new("t-cli-broken", "  - name: x\n    kind: nope\n");
    repo.devenv().arg("down").env("DOCKER_HOST", NO_DOCKER).assert().code(2);
    repo.devenv().args(["down", "--env", "t-cli-broken"]).env("DOCKER_HOST", NO_DOCKER).assert().success();
}

#[test]
fn status_before_up() {
    let repo = TestRepo::new("t-cli-status", "");
    repo.devenv().arg("status").assert().success().stdout(predicate::str::contains("Not created yet"));
}

#[test]
fn doctor_reports_docker_with_its_fix() {
    let repo = TestRepo::new("t-cli-doctor", SERVICE);
    repo.devenv()
        .arg("doctor")
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL  docker"))
        .stdout(predicate::str::contains("fix: start the Docker engine"))
        .stdout(predicate::str::contains("ok  config"));
}

#[test]
fn the_example_repository_is_valid() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/shop");
    let state = tempfile::tempdir().unwrap();
    devenv_in(&example)
        .args(["plan", "--profile", "standalone"])
        .env("DEVENV_STATE_DIR", state.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .success()
        .stdout(predicate::str::contains("create   devenv-shop-orders-db"));
}

#[test]
fn the_sim_profile_without_its_binaries_names_the_build_command_and_creates_nothing() {
    let repo = TestRepo::new("t-cli-nosim", SERVICE);
    let cache = tempfile::tempdir().unwrap();
    repo.devenv()
        .args(["up", "--profile", "sim"])
        .env("DEVENV_CACHE_DIR", cache.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error[DEV042]: the sim binaries are not built"))
        .stderr(predicate::str::contains("hint: build them once with `devenv sim build`"));
    assert!(!repo.state_file().exists(), "nothing is recorded before the provider can run");
}

#[test]
fn a_flux_file_that_does_not_parse_stops_plan_with_its_path() {
    let repo = TestRepo::new("t-cli-pack", "");
    repo.write(
        "clusters/local/apps.yaml",
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\nspec: [\n",
    );
    repo.devenv()
        .args(["plan", "--profile", "sim"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV069]: 1 problem(s) Flux would fail on, found before anything is pushed",
        ))
        .stderr(predicate::str::contains(
            "error[DEV069]: clusters/local/apps.yaml:6:1: not valid YAML: did not find expected node content",
        ));
}

#[test]
fn a_file_too_large_to_pack_stops_plan_naming_it_and_an_odd_name_is_packed() {
    use std::os::unix::ffi::OsStrExt;
    let repo = TestRepo::new("t-cli-large", "");
    repo.write("clusters/local/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
    // A name that is not UTF-8 used to be read back by its lossy form: "No such file or directory".
    let odd = std::ffi::OsStr::from_bytes(b"clusters/local/men\xfc.txt");
    std::fs::write(repo.path().join(odd), "soup\n").unwrap();
    let output = repo.devenv().args(["plan", "--profile", "sim"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let plan = String::from_utf8_lossy(&output.stdout);
    assert!(plan.contains("(`clusters/local`, 2 files, sha256:"), "{plan}");
    assert!(plan.contains("  create   the cluster: no sim cluster was booted for this environment\n"), "{plan}");
    // Sparse: a file past the limit costs no disk, and is not read.
    let dump = std::fs::File::create(repo.path().join("clusters/local/dump.sql")).unwrap();
    dump.set_len(devenv::flux::files::MAX_FILE_SIZE + 1).unwrap();
    let started = std::time::Instant::now();
    repo.devenv()
        .args(["plan", "--profile", "sim"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error[DEV085]: `clusters/local/dump.sql` is 100.0 MiB (104857601 bytes), more than the 100.0 MiB a file may have to be packed",
        ))
        .stderr(predicate::str::contains("hint: a file that size is not for the cluster: list `clusters/local/dump.sql` in .gitignore"));
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    repo.write(".gitignore", "*.sql\n");
    repo.devenv().args(["plan", "--profile", "sim"]).env("DOCKER_HOST", NO_DOCKER).assert().success();
}

#[test]
fn a_failed_sim_build_says_so_and_shows_its_last_lines() {
    let dir = tempfile::tempdir().unwrap();
    devenv_in(dir.path())
        .args(["sim", "build"])
        .env("DEVENV_CACHE_DIR", dir.path().join("cache"))
        .env("GOPROXY", "off")
        .env("GOMODCACHE", dir.path().join("modules"))
        .env("GOFLAGS", "-mod=mod")
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error[DEV043]: the sim build failed"))
        .stderr(predicate::str::contains("module lookup disabled by GOPROXY=off"));
}

#[test]
fn a_source_url_that_is_not_a_url_is_a_config_error() {
    let repo = TestRepo::new("t-cli-sources", "");
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write(
        "devenv.yaml",
        &format!("{project}overlay:\n  sources:\n    - url: ghcr.io/lender/charts\n      to: oci://{{{{ registry }}}}/charts\n"),
    );
    repo.devenv()
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "devenv.yaml:12:12: overlay.sources[0].url: `ghcr.io/lender/charts` is not a URL",
        ))
        .stderr(predicate::str::contains("hint: write a full URL"));

    repo.write(
        "devenv.yaml",
        &format!("{project}overlay:\n  sources:\n    - url: oci://ghcr.io/lender/charts\n      to: oci://{{{{ mirror }}}}/charts\n"),
    );
    repo.devenv().arg("plan").assert().code(2).stderr(predicate::str::contains(
        "overlay.sources[0].to: `oci://{{ mirror }}/charts` uses a template other than `{{ registry }}`",
    ));
}

#[test]
fn a_helm_release_whose_repository_chart_is_missing_stops_plan() {
    let repo = TestRepo::new("t-cli-repo-chart", "");
    repo.write(
        "clusters/local/release.yaml",
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: statements\n  namespace: lending\nspec:\n  chart:\n    spec:\n      chart: ./charts/statements\n      sourceRef: {kind: GitRepository, name: flux-system, namespace: flux-system}\n",
    );
    repo.devenv()
        .args(["plan", "--profile", "sim"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error[DEV061]: a HelmRelease in `clusters/local/release.yaml` takes its chart from the repository",
        ))
        .stderr(predicate::str::contains("`charts/statements` is not a Helm chart: cannot read Chart.yaml"))
        .stderr(predicate::str::contains("hint: `spec.chart.spec.chart` must name a chart directory"));
}

#[test]
fn a_chart_without_chart_yaml_is_a_config_error() {
    let repo = TestRepo::new("t-cli-charts", "");
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write("devenv.yaml", &format!("{project}charts:\n  - path: charts/audit\n"));
    repo.write("charts/audit/values.yaml", "replicas: 1\n");
    repo.devenv().arg("plan").assert().code(2).stderr(predicate::str::contains(
        "devenv.yaml:11:11: charts[0].path: `charts/audit` is not a Helm chart: cannot read Chart.yaml",
    ));
    repo.write("charts/audit/Chart.yaml", "apiVersion: v2\nname: audit\n");
    repo.devenv()
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("is not a Helm chart: Chart.yaml has no `version`"));
}

#[test]
fn a_chart_repository_or_name_the_registry_would_refuse_is_a_config_error() {
    let repo = TestRepo::new("t-cli-chart-path", "");
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write("charts/audit/Chart.yaml", "apiVersion: v2\nname: audit\nversion: 1.0.0\n");
    repo.write("devenv.yaml", &format!("{project}charts:\n  - path: charts/audit\n    repository: Platform/charts\n"));
    repo.devenv()
        .arg("plan")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "devenv.yaml:12:17: charts[0].repository: `Platform/charts` is not a registry repository path",
        ))
        .stderr(predicate::str::contains("hint: use lowercase letters and digits"));
    repo.write("devenv.yaml", &format!("{project}charts:\n  - path: charts/audit\n"));
    repo.write("charts/audit/Chart.yaml", "apiVersion: v2\nname: Audit_\nversion: 1.0.0\n");
    repo.devenv().arg("plan").assert().code(2).stderr(predicate::str::contains(
        "charts[0].path: the chart's name `Audit_` (its Chart.yaml) cannot be a path in the registry",
    ));
}

#[test]
fn a_profile_field_not_supported_yet_is_an_error_naming_file_and_field() {
    let repo = TestRepo::new("t-cli-unsupported", SERVICE);
    repo.write(".devenv/profiles/mine.yaml", "cluster:\n  provider: sim\nttl: 72h\n");
    repo.devenv()
        .args(["up", "--profile", "mine"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV012]: .devenv/profiles/mine.yaml:3:6: ttl: not supported yet with the `sim` provider",
        ))
        .stderr(predicate::str::contains(
            "hint: remove `ttl`: it shapes the namespaces of `devenv preview`, whose profiles use `provider: eks-namespace`",
        ));
    repo.write(".devenv/profiles/mine.yaml", "cluster:\n  provider: none\nsubstitutes:\n  runtime: cluster\n");
    repo.devenv().args(["plan", "--profile", "mine"]).env("DOCKER_HOST", NO_DOCKER).assert().code(2).stderr(
        predicate::str::contains(
            "error[DEV012]: .devenv/profiles/mine.yaml:4:12: substitutes.runtime: `cluster` needs a cluster whose pods run, and the `none` provider has none",
        ),
    );
    repo.devenv()
        .args(["up", "--profile", "standalone", "--context", "kind-dev"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV012]: --context: a kubeconfig context does not apply to the `none` provider",
        ));
    assert!(!repo.state_file().exists(), "nothing was created");
}

/// A kubeconfig with one context, `here`, whose API server is `server`.
fn kubeconfig(dir: &std::path::Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: here\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\ncontexts:\n- name: here\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user:\n    token: t\n"
        ),
    )
    .unwrap();
    path
}

fn existing_profile(repo: &TestRepo, context: &str) {
    repo.write(
        ".devenv/profiles/shared.yaml",
        &format!("cluster:\n  provider: existing\n  context: {context}\nregistry:\n  url: 127.0.0.1:5999\n"),
    );
}

#[test]
fn an_existing_cluster_whose_context_does_not_exist_is_refused_before_anything_is_created() {
    let repo = TestRepo::new("t-cli-nocontext", SERVICE);
    let config = kubeconfig(repo.state.path(), "https://127.0.0.1:1");
    existing_profile(&repo, "her");
    repo.devenv()
        .args(["up", "--profile", "shared"])
        .env("KUBECONFIG", &config)
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error[DEV044]: cannot use the kubeconfig context of the `existing` cluster"))
        .stderr(predicate::str::contains("has no context `her`"))
        .stderr(predicate::str::contains("(known contexts: here); did you mean `here`?"));
    // `--context` chooses another one, and wins over the profile.
    repo.devenv()
        .args(["plan", "--profile", "shared", "--context", "there"])
        .env("KUBECONFIG", &config)
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("has no context `there`"));
    assert!(!repo.state_file().exists(), "nothing was created");
}

#[test]
fn an_existing_cluster_that_does_not_answer_is_refused_before_anything_is_created() {
    let repo = TestRepo::new("t-cli-unreachable", SERVICE);
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = kubeconfig(repo.state.path(), &format!("https://127.0.0.1:{port}"));
    existing_profile(&repo, "here");
    repo.devenv()
        .args(["up", "--profile", "shared"])
        .env("KUBECONFIG", &config)
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(format!(
            "error[DEV045]: the API server of context `here` (https://127.0.0.1:{port}) does not answer"
        )))
        .stderr(predicate::str::contains("hint: check that the cluster runs and this machine reaches it"));
    assert!(!repo.state_file().exists(), "nothing was created");
}

#[test]
fn a_reader_that_goes_away_does_not_stop_the_command() {
    use std::os::fd::{FromRawFd, OwnedFd};
    // A pipe whose reading end is closed before devenv writes, as in `devenv down | head -0`.
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(reader);
    let repo = TestRepo::new("t-cli-closed-pipe", "");
    let output = repo
        .std_command()
        .args(["down", "--env", "t-cli-closed-pipe"])
        .env("DOCKER_HOST", NO_DOCKER)
        .stdout(std::process::Stdio::from(writer))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(
                files_under(&path).into_iter().map(|f| format!("{}/{f}", path.file_name().unwrap().to_string_lossy())),
            );
        } else {
            files.push(path.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    files
}

#[test]
fn a_missing_k3d_names_its_install_and_nothing_is_created() {
    let repo = TestRepo::new("t-cli-nok3d", SERVICE);
    // PATH has no k3d: devenv itself needs nothing from it.
    let path = tempfile::tempdir().unwrap();
    repo.devenv()
        .args(["up", "--profile", "k3d"])
        .env("PATH", path.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains("error[DEV047]: the `k3d` command is not installed (it is not on PATH)"))
        .stderr(predicate::str::contains(
            "hint: install k3d v5.5.0 or newer (https://k3d.io/stable/#installation) and put it on PATH",
        ));
    assert_eq!(files_under(repo.state.path()), Vec::<String>::new(), "nothing is recorded or written");
    repo.devenv()
        .args(["doctor", "--profile", "k3d"])
        .env("PATH", path.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stdout(predicate::str::contains("FAIL  k3d      the `k3d` command is not installed"))
        .stdout(predicate::str::contains("fix: install k3d v5.5.0 or newer"));
    assert!(!repo.state_file().exists(), "doctor records nothing");
}

#[test]
fn a_k3d_cluster_name_longer_than_k3d_accepts_is_a_config_error() {
    // `devenv-<env>` is 36 characters; k3d takes at most 32.
    let repo = TestRepo::new("t-cli-k3d-name-k3d-refuses-it", SERVICE);
    repo.devenv()
        .args(["up", "--profile", "k3d"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV005]: `devenv-t-cli-k3d-name-k3d-refuses-it` cannot name a k3d cluster: it is longer than 32 characters",
        ))
        .stderr(predicate::str::contains("shorten the profile's `cluster.name`"));
    assert!(!repo.state_file().exists());
}

/// A `k3d` that answers `version` and `cluster list` as k3d v5.9.0 does on an engine whose
/// clusters are `listed`, logs every command line to `k3d.log`, keeps the configuration
/// `cluster create` is given as `created.yaml`, then fails as k3d does without a Docker
/// engine. Shell builtins only, so PATH needs nothing else.
fn fake_k3d(dir: &std::path::Path, listed: &[&str]) {
    let clusters: Vec<String> = listed
        .iter()
        .map(|name| {
            format!(r#"{{"name":"{name}","serversRunning":1,"serversCount":1,"agentsRunning":0,"agentsCount":0}}"#)
        })
        .collect();
    let script = format!(
        r#"#!/bin/sh
printf '%s\n' "$*" >> '{dir}/k3d.log'
case "$*" in
  "version") printf 'k3d version v5.9.0\nk3s version v1.33.1-k3s1 (default)\n' ;;
  "cluster list -o json") printf '%s\n' '[{clusters}]' ;;
  "cluster create --config "*)
    while IFS= read -r line; do printf '%s\n' "$line"; done < "$4" > '{dir}/created.yaml'
    printf 'INFO[0000] Prep: Network\n'
    printf 'ERRO[0000] Failed to get nodes for cluster: no Docker engine here\n' >&2
    exit 1 ;;
  *) exit 2 ;;
esac
"#,
        dir = dir.display(),
        clusters = clusters.join(",")
    );
    let path = dir.join("k3d");
    std::fs::write(&path, script).unwrap();
    let mut permissions = std::fs::metadata(&path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
    std::fs::set_permissions(&path, permissions).unwrap();
}

/// k3d's own JSON schema of its configuration, vendored from its Go module (see its README).
fn k3d_schema() -> jsonschema::Validator {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/k3d");
    let schemas: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("v1alpha5-schema-"))
        .collect();
    assert_eq!(schemas.len(), 1, "one vendored schema: {schemas:?}");
    let schema: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&schemas[0]).unwrap()).unwrap();
    jsonschema::draft7::options().should_validate_formats(true).build(&schema).unwrap()
}

#[test]
fn k3d_is_run_on_a_recorded_cluster_with_a_configuration_its_schema_accepts() {
    let env = "t-cli-k3d";
    let repo = TestRepo::new(env, "");
    repo.write("clusters/local/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n");
    let bin = tempfile::tempdir().unwrap();
    fake_k3d(bin.path(), &["someone-elses"]);
    let output = repo
        .devenv()
        .args(["up", "--profile", "k3d"])
        .env("PATH", bin.path())
        .env("KUBECONFIG", repo.state.path().join("kubeconfig"))
        .env("DOCKER_HOST", NO_DOCKER)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let state_dir = repo.state.path().join("envs").join(env);
    let config_path = state_dir.join("k3d-config.yaml");
    assert!(
        stderr.contains(&format!("error[DEV041]: `k3d cluster create --config {}` failed", config_path.display())),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: k3d's last words:\n    INFO[0000] Prep: Network\n    ERRO[0000] Failed to get nodes"),
        "{stderr}"
    );

    // Exactly these commands: the checks before anything is made (preflight), the plan, the
    // same decision again when it is carried out, then the cluster from the written
    // configuration. The version is asked once.
    let log = std::fs::read_to_string(bin.path().join("k3d.log")).unwrap();
    let create = format!("cluster create --config {}", config_path.display());
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        ["version", "cluster list -o json", "cluster list -o json", "cluster list -o json", create.as_str()]
    );

    // The cluster and its registry were recorded before k3d was asked to make them.
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state_dir.join("k3d.json")).unwrap()).unwrap();
    assert_eq!(record["cluster"], "devenv-t-cli-k3d");
    assert_eq!(record["registryContainer"], "k3d-devenv-t-cli-k3d-registry");
    let port = record["registryPort"].as_u64().unwrap();
    assert_ne!(port, 0);
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(repo.state_file()).unwrap()).unwrap();
    assert_eq!(state["cluster"]["provider"], "k3d");
    assert_eq!(state["cluster"]["context"], "k3d-devenv-t-cli-k3d");
    assert_eq!(state["cluster"]["registry"]["fromCluster"], "k3d-devenv-t-cli-k3d-registry:5000");

    // What k3d was given is what devenv wrote, and k3d's schema accepts it.
    let created = std::fs::read_to_string(bin.path().join("created.yaml")).unwrap();
    assert_eq!(created, std::fs::read_to_string(&config_path).unwrap());
    let config: serde_json::Value = serde_yaml::from_str(&created).unwrap();
    let errors: Vec<String> =
        k3d_schema().iter_errors(&config).map(|e| format!("{}: {e}", e.instance_path())).collect();
    assert_eq!(errors, Vec::<String>::new(), "{created}");
    assert_eq!(config["metadata"]["name"], "devenv-t-cli-k3d");
    assert_eq!(config["registries"]["create"]["name"], "k3d-devenv-t-cli-k3d-registry");
    assert_eq!(config["registries"]["create"]["hostPort"], port.to_string());
    assert!(config["registries"]["config"].as_str().unwrap().contains(&format!("\"localhost:{port}\":")));
}

#[test]
fn a_k3d_cluster_devenv_did_not_create_is_refused_and_left_alone() {
    let repo = TestRepo::new("t-cli-k3d-taken", SERVICE);
    let bin = tempfile::tempdir().unwrap();
    fake_k3d(bin.path(), &["devenv-t-cli-k3d-taken"]);
    repo.devenv()
        .args(["up", "--profile", "k3d"])
        .env("PATH", bin.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(1)
        .stderr(predicate::str::contains(
            "error[DEV048]: a k3d cluster named `devenv-t-cli-k3d-taken` already exists, and devenv did not create it",
        ))
        .stderr(predicate::str::contains("(`k3d cluster delete devenv-t-cli-k3d-taken`)"));
    let log = std::fs::read_to_string(bin.path().join("k3d.log")).unwrap();
    assert_eq!(log.lines().collect::<Vec<_>>(), ["version", "cluster list -o json"], "asked, never told");
    assert_eq!(files_under(repo.state.path()), Vec::<String>::new(), "nothing is recorded or written");
}

// ---------------------------------------------------------------------------------------
// The environment's lock: one `up` or `down` at a time
// ---------------------------------------------------------------------------------------

/// A Docker socket that accepts connections and never answers: a `down` holds its
/// environment for the engine's connect deadline (10 s) before it gives up on the engine.
fn silent_docker() -> (tempfile::TempDir, std::os::unix::net::UnixListener, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("docker.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    (dir, listener, format!("unix://{}", path.display()))
}

/// Starts `devenv down` against the silent engine and waits until it holds the lock.
fn busy_down(repo: &TestRepo, docker: &str) -> std::process::Child {
    let child = repo
        .std_command()
        .arg("down")
        .env("DOCKER_HOST", docker)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lock = repo.env_dir().join("lock");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let mine = format!("\"pid\":{}", child.id());
    while !std::fs::read_to_string(&lock).is_ok_and(|text| text.contains(&mine)) {
        assert!(std::time::Instant::now() < deadline, "`down` never took the lock");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child
}

#[test]
fn a_second_command_waits_for_the_one_holding_the_environment_and_reads_do_not() {
    use std::time::{Duration, Instant};
    let repo = TestRepo::new("t-cli-lock", "");
    let (_dir, _socket, silent) = silent_docker();
    let mut holder = busy_down(&repo, &silent);
    let pid = holder.id();
    let held_from = Instant::now();

    // status and plan only read: they answer at once.
    for command in ["status", "plan"] {
        let started = Instant::now();
        let output = repo.devenv().arg(command).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{command}: {stderr}");
        assert!(!stderr.contains("waiting for"), "{command}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(3), "{command} took {:?}", started.elapsed());
    }

    // A bounded wait ends with the holder's name.
    let started = Instant::now();
    let output = repo.devenv().args(["up", "--timeout", "1s"]).output().unwrap();
    let gave_up = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("Starting t-cli-lock waiting for `devenv down` (pid {pid}, since ")),
        "the wait names the holder: {stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "error[DEV032]: environment `t-cli-lock` is in use by `devenv down` (pid {pid}, since "
        )) && stderr.contains("gave up waiting after 1s"),
        "{stderr}"
    );
    assert!(stderr.contains(&format!("`kill -INT {pid}` stops it cleanly")), "{stderr}");
    assert!(gave_up >= Duration::from_secs(1) && gave_up < Duration::from_secs(4), "{gave_up:?}");
    assert!(!repo.state_file().exists(), "the waiting `up` changed nothing");

    // An unbounded one goes on when the holder is done, and says so.
    let holder_done = std::thread::spawn(move || {
        let status = holder.wait().unwrap();
        (status, Instant::now())
    });
    let started = Instant::now();
    let output = repo.devenv().args(["up", "--output", "json", "--timeout", "60s"]).output().unwrap();
    let ended = Instant::now();
    let (status, released) = holder_done.join().unwrap();
    assert!(status.success());
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let events: Vec<serde_json::Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let waiting = events
        .iter()
        .find(|e| e["event"] == "started" && e["step"] == "lock/t-cli-lock")
        .unwrap_or_else(|| panic!("no waiting event: {events:?}"));
    assert!(waiting["message"].as_str().unwrap().contains(&format!("`devenv down` (pid {pid}")), "{waiting}");
    let free = events.iter().find(|e| e["event"] == "finished" && e["step"] == "lock/t-cli-lock").unwrap();
    assert_eq!(free["status"], "ok");
    assert!(repo.state_file().exists(), "the second `up` ran");
    // The lock was taken after the waiter had started and waited `elapsedMs`, and before it ended.
    let waited = Duration::from_millis(free["elapsedMs"].as_u64().unwrap());
    let taken_after = |at: Instant| at.checked_duration_since(released).unwrap_or_default().as_millis();
    eprintln!(
        "the holder ran {:.1}s; `up --timeout 1s` gave up after {:.2}s; the next `up` waited {:.2}s and took the lock {}-{} ms after the holder exited",
        (released - held_from).as_secs_f64(),
        gave_up.as_secs_f64(),
        waited.as_secs_f64(),
        taken_after(started + waited),
        taken_after(ended),
    );
}

#[test]
fn a_lock_left_by_a_killed_command_is_taken_over_at_once() {
    use std::time::{Duration, Instant};
    let repo = TestRepo::new("t-cli-killed", "");
    let (_dir, _socket, silent) = silent_docker();
    let mut holder = busy_down(&repo, &silent);
    let pid = holder.id();
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    holder.wait().unwrap();

    let started = Instant::now();
    let output = repo.devenv().args(["up", "--timeout", "30s"]).output().unwrap();
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("warning: `devenv down` (pid {pid}, since "))
            && stderr
                .contains("ended without releasing environment `t-cli-killed` (it was killed or crashed); taking over"),
        "{stderr}"
    );
    assert!(!stderr.contains("waiting for"), "{stderr}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    eprintln!("after SIGKILL of the holder, the next `up` finished in {} ms", took.as_millis());
}

#[test]
fn a_corrupt_state_file_names_a_way_out_that_keeps_or_deletes_the_data() {
    let repo = TestRepo::new("t-cli-corrupt", SERVICE);
    std::fs::create_dir_all(repo.env_dir()).unwrap();
    std::fs::write(repo.state_file(), "{\"version\": 1, \"env\": ").unwrap();
    for command in ["plan", "status"] {
        let output = repo.devenv().arg(command).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains("error[DEV030]: the state file `"), "{stderr}");
        assert!(
            stderr.contains("hint: `") && stderr.contains("holds the environment's generated credentials and ports: repair the JSON to keep its data; or `devenv down --purge` (it needs no state file) removes"),
            "{stderr}"
        );
    }
}

/// A service mapping keys to every kind of output, and a database name a shell would expand.
const ENV_SERVICE: &str = "  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: \"it's $HOME\"\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_NAME: database\n      DB_PASSWORD: password\n      DB_URL: url\n";

/// The state `up` would have written for `repo`: `orders-db` on port 40213 with its
/// credentials, and `cluster` (a recorded cluster) when given.
fn write_state(repo: &TestRepo, cluster: Option<Value>) {
    let mut state = json!({
        "version": 1,
        "env": repo.env,
        "repo": std::fs::canonicalize(repo.path()).unwrap(),
        "profile": "standalone",
        "services": {"orders-db": {"kind": "rds-mariadb", "hostPorts": {"sql": 40213}, "secrets": {"password": "pw-secret", "rootPassword": "root-secret"}}},
    });
    if let Some(cluster) = cluster {
        state["cluster"] = cluster;
    }
    std::fs::create_dir_all(repo.state_file().parent().unwrap()).unwrap();
    std::fs::write(repo.state_file(), state.to_string()).unwrap();
}

fn stdout_of(output: &std::process::Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a shell sees after `eval`-ing `script`: the values of `names`, one per line.
fn evaluated(script: &str, names: &[&str]) -> Vec<String> {
    let echo: Vec<String> = names.iter().map(|n| format!("printf '%s\\n' \"${{{n}-unset}}\"")).collect();
    let output = std::process::Command::new("bash")
        .args(["-c", &format!("eval \"$1\"; {}", echo.join("; ")), "_", script])
        .env_clear()
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().map(str::to_string).collect()
}

#[test]
fn env_prints_the_keys_with_this_machines_addresses_in_each_format() {
    let repo = TestRepo::new("t-cli-env", ENV_SERVICE);
    let output = repo.devenv().arg("env").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV033]: environment `t-cli-env` has not been created yet"), "{stderr}");
    assert!(stderr.contains("hint: `devenv up` creates it"), "{stderr}");
    write_state(&repo, None);

    // shell: `export` lines a shell takes back exactly, nothing expanded; the secrets left out.
    let output = repo.devenv().arg("env").output().unwrap();
    let shell = stdout_of(&output);
    assert_eq!(
        shell,
        "export AWS_REGION='us-east-1'\nexport DB_HOST='127.0.0.1'\nexport DB_NAME='it'\\''s $HOME'\nexport DB_PORT='40213'\nexport ENVIRONMENT='local'\n# left out (secret; `devenv env --show-secrets` includes them): DB_PASSWORD, DB_URL\n"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("left out the secret key(s) DB_PASSWORD, DB_URL"));
    assert_eq!(
        evaluated(&shell, &["DB_HOST", "DB_PORT", "DB_NAME", "DB_PASSWORD"]),
        ["127.0.0.1", "40213", "it's $HOME", "unset"]
    );
    let shown = stdout_of(&repo.devenv().args(["env", "--show-secrets"]).output().unwrap());
    assert_eq!(
        evaluated(&shown, &["DB_PASSWORD", "DB_URL"]),
        ["pw-secret", "mysql://app:pw-secret@127.0.0.1:40213/it's $HOME"]
    );
    assert!(!shown.contains("left out"), "{shown}");

    // dotenv: KEY=value lines, quoted where needed; a comment names the secrets left out.
    let dotenv = stdout_of(&repo.devenv().args(["env", "--format", "dotenv"]).output().unwrap());
    assert_eq!(
        dotenv,
        "AWS_REGION=us-east-1\nDB_HOST=127.0.0.1\nDB_NAME=\"it's $HOME\"\nDB_PORT=40213\nENVIRONMENT=local\n# left out (secret; `devenv env --show-secrets` includes them): DB_PASSWORD, DB_URL\n"
    );
    assert!(!dotenv.contains("pw-secret"));
    let dotenv = stdout_of(&repo.devenv().args(["env", "--format", "dotenv", "--show-secrets"]).output().unwrap());
    assert!(dotenv.contains("DB_PASSWORD=pw-secret\n") && !dotenv.contains('#'), "{dotenv}");

    // json: one object; --service keeps that service's keys only.
    let json: Value =
        serde_json::from_str(&stdout_of(&repo.devenv().args(["env", "--format", "json"]).output().unwrap())).unwrap();
    assert_eq!(
        json,
        json!({"AWS_REGION": "us-east-1", "DB_HOST": "127.0.0.1", "DB_NAME": "it's $HOME", "DB_PORT": "40213", "ENVIRONMENT": "local"})
    );
    let one =
        repo.devenv().args(["env", "--format", "json", "--service", "orders-db", "--show-secrets"]).output().unwrap();
    let one: Value = serde_json::from_str(&stdout_of(&one)).unwrap();
    let keys: Vec<&str> = one.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["DB_HOST", "DB_NAME", "DB_PASSWORD", "DB_PORT", "DB_URL"]);

    let output = repo.devenv().args(["env", "--service", "orders"]).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV013]: devenv.yaml has no service `orders`"), "{stderr}");
    assert!(stderr.contains("did you mean `orders-db`?"), "{stderr}");

    // A service added since the last `up` has no port yet.
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write("devenv.yaml", &format!("{project}  - name: cache\n    kind: elasticache-redis\n"));
    let output = repo.devenv().arg("env").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV033]: `cache` of environment `t-cli-env` has not been started yet"), "{stderr}");
    repo.devenv().args(["env", "--service", "orders-db"]).assert().success();
}

/// A kubeconfig with the contexts `other` (current) and `kind-devenv-t`.
fn two_context_kubeconfig(dir: &Path, current: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: {current}\nclusters:\n- name: a\n  cluster:\n    server: https://10.0.0.1:443\n- name: kind\n  cluster:\n    server: https://127.0.0.1:6443\ncontexts:\n- name: other\n  context:\n    cluster: a\n    user: u\n- name: kind-devenv-t\n  context:\n    cluster: kind\n    user: k\nusers:\n- name: u\n  user:\n    token: t\n- name: k\n  user:\n    token: secret-k\n"),
    )
    .unwrap();
    path
}

fn recorded_cluster(kubeconfig: &Path) -> Value {
    json!({"provider": "kind", "kubeconfig": kubeconfig, "context": "kind-devenv-t", "apiServer": "https://127.0.0.1:6443", "registry": {"host": "127.0.0.1:5001", "fromCluster": "kind-registry:5000"}})
}

#[test]
fn env_kubeconfig_selects_the_environments_cluster() {
    let repo = TestRepo::new("t-cli-envkube", SERVICE);
    write_state(&repo, None);
    let output = repo.devenv().args(["env", "--kubeconfig"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("error[DEV033]: environment `t-cli-envkube` has no cluster"), "{stderr}");
    assert!(stderr.contains("profile `standalone`, which has no cluster"), "{stderr}");

    // The cluster's context is the current one: its kubeconfig as it is.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = two_context_kubeconfig(dir.path(), "kind-devenv-t");
    write_state(&repo, Some(recorded_cluster(&kubeconfig)));
    let shell = stdout_of(&repo.devenv().args(["env", "--kubeconfig"]).output().unwrap());
    assert_eq!(shell, format!("export KUBECONFIG='{}'\n", kubeconfig.display()));

    // Another context is current: a kubeconfig of the cluster's context alone, private.
    let kubeconfig = two_context_kubeconfig(dir.path(), "other");
    let shell = stdout_of(&repo.devenv().args(["env", "--kubeconfig"]).output().unwrap());
    let written = repo.state_file().parent().unwrap().join("kubeconfig");
    assert_eq!(shell, format!("export KUBECONFIG='{}'\n", written.display()));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(text.contains("current-context: kind-devenv-t") && text.contains("secret-k"), "{text}");
    assert!(!text.contains("10.0.0.1") && !text.contains("name: other"), "only the cluster's context: {text}");
    assert_eq!(
        std::fs::read_to_string(&kubeconfig).unwrap().matches("current-context: other").count(),
        1,
        "the user's kubeconfig is untouched"
    );
    let dotenv = stdout_of(&repo.devenv().args(["env", "--kubeconfig", "--format", "dotenv"]).output().unwrap());
    assert_eq!(dotenv, format!("KUBECONFIG={}\n", written.display()));
}

/// `preview rbac` needs no repository: it prints what a cluster admin applies for CI.
#[test]
fn preview_rbac_prints_the_identity_s_rights_and_refuses_bad_identities() {
    let dir = tempfile::tempdir().unwrap();
    let rbac = |args: &[&str]| devenv_in(dir.path()).args(["preview", "rbac"]).args(args).assert();
    let printed = rbac(&["--service-account", "ci/deployer"]).success();
    let text = String::from_utf8(printed.get_output().stdout.clone()).unwrap();
    assert!(text.starts_with("# What service account ci/deployer needs"), "{text}");
    assert_eq!(text.matches("\n---\n").count(), 4, "four documents: {text}");
    assert!(text.contains("kind: ValidatingAdmissionPolicyBinding"), "{text}");
    assert!(text.contains("request.userInfo.username == \"system:serviceaccount:ci:deployer\""), "{text}");
    rbac(&["--help"]).success().stdout(predicate::str::contains("Examples:"));

    rbac(&["--user", "devenv-ci", "--group", "ci"])
        .code(2)
        .stderr(predicate::str::contains("error: the argument '--user <NAME>' cannot be used with '--group <NAME>'"));
    rbac(&[]).code(2).stderr(predicate::str::contains("the following required arguments were not provided"));
    rbac(&["--service-account", "deployer"]).code(2).stderr(predicate::str::contains(
        "invalid value 'deployer' for '--service-account <NAMESPACE/NAME>': `deployer` is not NAMESPACE/NAME",
    ));
    rbac(&["--service-account", "CI/deployer"]).code(2).stderr(predicate::str::contains("namespace `CI` contains `C`"));
    rbac(&["--user", ""]).code(2).stderr(predicate::str::contains("a value is required for '--user <NAME>'"));
    devenv_in(dir.path()).arg("preview").assert().code(2).stderr(predicate::str::contains("rbac"));
}

#[test]
fn version_names_the_build_and_the_pinned_versions() {
    let dir = tempfile::tempdir().unwrap();
    let long = stdout_of(&devenv_in(dir.path()).arg("--version").output().unwrap());
    let lines: Vec<&str> = long.lines().collect();
    assert_eq!(lines.len(), 4, "{long}");
    assert!(lines[0].starts_with(&format!("devenv {} (commit ", env!("CARGO_PKG_VERSION"))), "{long}");
    let versions = include_str!("../sim/versions.env");
    let pin = |key: &str| versions.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap().to_string();
    assert!(lines[1].starts_with(&format!("Kubernetes {}", pin("KUBERNETES_VERSION"))), "{long}");
    for controller in ["SOURCE_CONTROLLER", "KUSTOMIZE_CONTROLLER", "HELM_CONTROLLER"] {
        assert!(lines[2].contains(&pin(&format!("{controller}_VERSION"))), "{long}");
    }
    let kind =
        include_str!("../testbed/kind/versions.env").lines().find_map(|l| l.strip_prefix("KIND_VERSION=")).unwrap();
    assert!(lines[3].starts_with(&format!("kind {kind}")), "{long}");
    assert_eq!(stdout_of(&devenv_in(dir.path()).arg("version").output().unwrap()), long, "`version` prints the same");
    assert_eq!(stdout_of(&devenv_in(dir.path()).arg("-V").output().unwrap()), format!("{}\n", lines[0]));

    let json =
        shape::result_line(&devenv_in(dir.path()).args(["version", "--output", "json"]).output().unwrap().stdout);
    assert_eq!(json["kubernetes"], pin("KUBERNETES_VERSION"));
    assert_eq!(json["flux"]["sourceController"], pin("SOURCE_CONTROLLER_VERSION"));
    assert_eq!(json["kind"], kind);
    assert_eq!(
        lines[0],
        format!("devenv {} (commit {})", json["version"].as_str().unwrap(), json["commit"].as_str().unwrap())
    );
}

/// The candidates the shell gets on TAB after `words` (the last is the word being completed), as
/// the script from `devenv completions bash` asks for them: `COMPLETE=bash devenv -- devenv …`.
fn candidates(dir: &Path, state: &Path, words: &[&str]) -> Vec<String> {
    let output = devenv_in(dir)
        .env("DEVENV_STATE_DIR", state)
        .env("COMPLETE", "bash")
        .env("_CLAP_COMPLETE_INDEX", words.len().to_string())
        .env("_CLAP_COMPLETE_COMP_TYPE", "9")
        .env("_CLAP_COMPLETE_SPACE", "true")
        .env("_CLAP_IFS", "\n")
        .args(["--", "devenv"])
        .args(words)
        .output()
        .unwrap();
    assert!(output.status.success(), "{words:?}: {}", String::from_utf8_lossy(&output.stderr));
    assert!(output.stderr.is_empty(), "completion is silent: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).lines().filter(|l| !l.starts_with('-')).map(str::to_string).collect()
}

#[test]
fn completion_offers_the_repositorys_profiles_services_and_environments() {
    const BUILT_IN: [&str; 5] = ["k3d", "local", "preview", "sim", "standalone"];
    let repo = TestRepo::new("t-cli-complete", &format!("{SERVICE}  - name: cache\n    kind: elasticache-redis\n"));
    repo.write(".devenv/profiles/mine.yaml", "cluster:\n  provider: sim\n");
    let state = repo.state_root();
    std::fs::create_dir_all(state.join("envs/shop-a")).unwrap();
    std::fs::write(state.join("envs/shop-a/state.json"), "{}").unwrap();
    std::fs::create_dir_all(state.join("envs/half-made")).unwrap();
    let here = repo.path();

    let mut profiles = BUILT_IN.map(String::from).to_vec();
    profiles.push("mine".into());
    assert_eq!(candidates(here, state, &["up", "--profile", ""]), profiles);
    assert_eq!(candidates(here, state, &["status", "--profile", "mi"]), ["mine"]);
    assert_eq!(candidates(here, state, &["logs", ""]), ["orders-db", "cache"]);
    assert_eq!(candidates(here, state, &["logs", "c"]), ["cache"]);
    assert_eq!(candidates(here, state, &["logs", "--env", ""]), ["shop-a"], "environments with a state file");
    // From a directory below the root, as commands find the repository.
    std::fs::create_dir_all(here.join("apps/orders")).unwrap();
    assert_eq!(candidates(&here.join("apps/orders"), state, &["logs", ""]), ["orders-db", "cache"]);

    // The same through bash itself: the installed script's function, `devenv` from the PATH.
    std::fs::write(
        here.join("devenv.bash"),
        stdout_of(&devenv_in(here).args(["completions", "bash"]).output().unwrap()),
    )
    .unwrap();
    let bin = Path::new(env!("CARGO_BIN_EXE_devenv")).parent().unwrap();
    let tab = |words: &str, current: &str| {
        let line = format!(
            "source devenv.bash; COMP_WORDS=({words} {current:?}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_TYPE=9; _clap_complete_devenv devenv {current:?}; printf '%s\\n' \"${{COMPREPLY[@]}}\""
        );
        let output = std::process::Command::new("bash")
            .args(["-c", &line])
            .current_dir(here)
            .env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()))
            .env("DEVENV_STATE_DIR", state)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).lines().map(|l| l.trim().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(tab("devenv up --profile", "mi"), ["mine"]);
    assert_eq!(tab("devenv logs", "or"), ["orders-db"]);

    // A devenv.yaml being edited offers no services, and profiles still.
    repo.write("devenv.yaml", "project: shop\nservices: [\n");
    assert!(candidates(here, state, &["logs", ""]).is_empty());
    assert_eq!(candidates(here, state, &["up", "--profile", ""]), profiles);
    // Outside any repository: the built-in profiles only.
    let elsewhere = tempfile::tempdir().unwrap();
    assert_eq!(candidates(elsewhere.path(), state, &["up", "--profile", ""]), BUILT_IN);
    assert!(candidates(elsewhere.path(), state, &["logs", ""]).is_empty());
    let no_state = elsewhere.path().join("none");
    assert!(candidates(elsewhere.path(), &no_state, &["down", "--env", ""]).is_empty());
}

#[test]
fn completions_and_manual_pages_come_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    // Each script hands the words to `devenv` on the PATH, which answers with the candidates.
    for (shell, marker) in [
        ("bash", "-F _clap_complete_devenv devenv"),
        ("zsh", "#compdef devenv"),
        ("fish", "complete --keep-order --exclusive --command devenv"),
        ("powershell", "Register-ArgumentCompleter"),
        ("elvish", "set edit:completion:arg-completer[devenv]"),
    ] {
        let script = stdout_of(&devenv_in(dir.path()).args(["completions", shell]).output().unwrap());
        assert!(script.contains(marker), "{shell}: {script}");
        assert!(script.contains("COMPLETE") && script.contains("devenv"), "{shell} calls devenv back: {script}");
    }
    let check = std::process::Command::new("bash")
        .args(["-c", "source /dev/stdin && complete -p devenv"])
        .stdin(
            std::fs::File::open({
                let path = dir.path().join("devenv.bash");
                std::fs::write(
                    &path,
                    stdout_of(&devenv_in(dir.path()).args(["completions", "bash"]).output().unwrap()),
                )
                .unwrap();
                path
            })
            .unwrap(),
        )
        .output()
        .unwrap();
    assert!(check.status.success(), "bash loads the script: {}", String::from_utf8_lossy(&check.stderr));

    let page = stdout_of(&devenv_in(dir.path()).arg("man").output().unwrap());
    assert!(page.contains(".TH devenv 1") && page.contains("devenv\\-env(1)"), "{page}");
    let pages = dir.path().join("man1");
    let output = devenv_in(dir.path()).args(["man", "--dir"]).arg(&pages).output().unwrap();
    assert!(stdout_of(&output).starts_with("Wrote "));
    let mut written: Vec<String> =
        std::fs::read_dir(&pages).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    written.sort();
    assert_eq!(
        written,
        [
            "devenv-completions.1",
            "devenv-doctor.1",
            "devenv-down.1",
            "devenv-env.1",
            "devenv-logs.1",
            "devenv-man.1",
            "devenv-plan.1",
            "devenv-preview-down.1",
            "devenv-preview-gc.1",
            "devenv-preview-list.1",
            "devenv-preview-rbac.1",
            "devenv-preview-up.1",
            "devenv-preview.1",
            "devenv-sim-build.1",
            "devenv-sim.1",
            "devenv-status.1",
            "devenv-up.1",
            "devenv-version.1",
            "devenv.1"
        ]
    );
    let env_page = std::fs::read_to_string(pages.join("devenv-env.1")).unwrap();
    assert!(env_page.contains("show\\-secrets"), "{env_page}");
}

/// A sim build as `devenv sim build` finds it complete, in `cache`.
fn fake_sim_build(cache: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = cache.join("sim").join(devenv::providers::sim::versions_key());
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::create_dir_all(dir.join("crds")).unwrap();
    for binary in devenv::providers::sim::BINARIES {
        let path = dir.join("bin").join(binary);
        std::fs::write(&path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(dir.join("crds/kustomization.yaml"), "kind: CustomResourceDefinition\n").unwrap();
    std::fs::write(dir.join("build-info.json"), "{}").unwrap();
    std::fs::write(dir.join("versions.env"), include_str!("../sim/versions.env")).unwrap();
    dir
}

/// The name of each command as the README's shapes name it: `up`, `sim-build`.
fn command_names(command: &clap::Command, prefix: &str, names: &mut BTreeSet<String>) {
    for sub in command.get_subcommands() {
        let name = format!("{prefix}{}", sub.get_name());
        if sub.has_subcommands() {
            command_names(sub, &format!("{name}-"), names);
        } else {
            names.insert(name);
        }
    }
}

/// Every command's `--output json` result (and an error) has the shape the README documents;
/// `up` and `logs`, which need a running substitute, are checked in the docker tier, and the
/// cluster parts of `up`, `status` and `down` in the flux tier.
#[test]
fn every_command_s_json_has_the_shape_the_readme_documents() {
    let shapes = Shapes::from_readme();
    let mut commands = BTreeSet::new();
    command_names(&devenv::cli::command(), "", &mut commands);
    commands.insert("error".to_string());
    assert_eq!(
        shapes.commands().into_iter().collect::<BTreeSet<_>>(),
        commands,
        "a shape for each command in the README"
    );

    let mut checked = BTreeSet::new();
    let mut check = |name: &str, stdout: &[u8]| {
        let lines = shape::lines(stdout);
        let wanted = if name == "error" { "error" } else { "result" };
        let line = lines
            .iter()
            .find(|l| l["event"] == wanted)
            .unwrap_or_else(|| panic!("`{name}` prints a {wanted}: {lines:?}"));
        shapes.check_line(name, line);
        checked.insert(name.to_string());
    };
    let json = |repo: &TestRepo, args: &[&str]| {
        repo.devenv().args(args).args(["--output", "json"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap().stdout
    };
    let repo = TestRepo::new("t-cli-shapes", ENV_SERVICE);
    check("version", &json(&repo, &["version"]));
    check("completions", &json(&repo, &["completions", "zsh"]));
    check("man", &json(&repo, &["man"]));
    let pages = tempfile::tempdir().unwrap();
    check("man", &json(&repo, &["man", "--dir", pages.path().to_str().unwrap()]));
    check("plan", &json(&repo, &["plan"]));
    check("doctor", &json(&repo, &["doctor"]));
    let empty = TestRepo::new("t-cli-shapes-empty", "");
    check("status", &json(&empty, &["status"]));
    check("down", &json(&repo, &["down"]));
    check("error", &json(&repo, &["env"]));
    write_state(&repo, None);
    check("env", &json(&repo, &["env"]));
    check("env", &json(&repo, &["env", "--service", "orders-db", "--show-secrets"]));
    let dir = tempfile::tempdir().unwrap();
    write_state(&repo, Some(recorded_cluster(&two_context_kubeconfig(dir.path(), "kind-devenv-t"))));
    check("env", &json(&repo, &["env", "--kubeconfig"]));

    // A plan with Flux: artifacts, the overlay's changes and diffs, charts, the contract.
    let landbay = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/landbay");
    let state = tempfile::tempdir().unwrap();
    let output = devenv_in(&landbay)
        .args(["plan", "--profile", "local", "--output", "json"])
        .env("DEVENV_STATE_DIR", state.path())
        .env("DOCKER_HOST", NO_DOCKER)
        .env("PATH", state.path())
        .output()
        .unwrap();
    let plan = shape::result_line(&output.stdout);
    assert!(
        !plan["flux"]["diffs"].as_array().unwrap().is_empty() && !plan["flux"]["charts"].as_array().unwrap().is_empty(),
        "{plan}"
    );
    // Without `kind` on PATH `up` would stop; `plan` says so and shows the rest.
    assert!(plan["cluster"]["intent"].is_null(), "{plan}");
    let warned = shape::lines(&output.stdout).into_iter().any(|line| {
        line["event"] == "warning"
            && line["message"].as_str().is_some_and(|m| m.starts_with("cannot tell what `up` does with the cluster: "))
    });
    assert!(warned, "{}", String::from_utf8_lossy(&output.stdout));
    // The fixture's CRD annotation Flux never substitutes, and the default the profile replaces.
    let findings: Vec<(&str, &str)> = (plan["flux"]["findings"].as_array().unwrap().iter())
        .map(|f| (f["severity"].as_str().unwrap(), f["file"].as_str().unwrap()))
        .collect();
    assert_eq!(
        findings,
        [("warning", "infrastructure/crds/mortgageproducts.yaml"), ("note", "infrastructure/platform/product.yaml")],
        "{plan}"
    );
    check("plan", &output.stdout);

    let cache = tempfile::tempdir().unwrap();
    fake_sim_build(cache.path());
    let output = devenv_in(cache.path())
        .args(["sim", "build", "--output", "json"])
        .env("DEVENV_CACHE_DIR", cache.path())
        .output()
        .unwrap();
    check("sim-build", &output.stdout);

    check("preview-rbac", &json(&repo, &["preview", "rbac", "--group", "ci:deployers"]));

    // `up` and `logs` need a substitute (the docker tier checks them), the preview commands a
    // cluster (the preview tier).
    checked.extend(["up", "logs", "preview-up", "preview-down", "preview-list", "preview-gc"].map(str::to_string));
    assert_eq!(checked, commands, "every command's JSON is checked");
}

/// The parts of `up`, `status` and `down` results that only a cluster fills, as devenv
/// serialises them, have the README's shapes (the flux tier checks them on a real cluster).
#[test]
fn the_cluster_parts_of_results_have_the_readme_shapes() {
    use devenv::flux::artifact::Pushed;
    use devenv::flux::deploy::{Artifacts, Deployed};
    use devenv::flux::wait::ObjectStatus;
    let shapes = Shapes::from_readme();
    let pushed = Pushed {
        reference: "127.0.0.1:5000/devenv/shop/devenv-source:latest".into(),
        pushed: true,
        digest: "sha256:1".into(),
        manifest_digest: "sha256:2".into(),
    };
    let object = |applied_by: Option<&str>, causes: Vec<String>| ObjectStatus {
        object: "Kustomization/flux-system/apps".into(),
        ready: false,
        message: "dependency not ready".into(),
        depends_on: vec!["Kustomization/flux-system/infrastructure".into()],
        applied_by: applied_by.map(str::to_string),
        causes,
    };
    let deployed = Deployed {
        artifacts: Artifacts {
            pushed: vec!["devenv-source".into()],
            sources: [("devenv-source".to_string(), pushed.clone())].into(),
            charts: vec![pushed],
        },
        objects: vec![
            object(None, Vec::new()),
            object(Some("Kustomization/flux-system/devenv-root"), vec!["HelmRepository/x/y: failed".into()]),
        ],
    };
    let value = serde_json::to_value(&deployed).unwrap();
    assert!(
        value["objects"][0].get("dependsOn").is_some() && value["objects"][0].get("depends_on").is_none(),
        "{value}"
    );
    shapes.check("Deployed", &value);
    let process = devenv::providers::sim::ProcessStatus {
        name: "etcd".into(),
        pid: Some(42),
        port: Some(2379),
        healthy: true,
        detail: "ready".into(),
        log: "/tmp/etcd.log".into(),
        rss_bytes: Some(1 << 20),
    };
    shapes.check("Process", &serde_json::to_value(&process).unwrap());
    let cluster = devenv::providers::ClusterInfo {
        provider: devenv::config::profile::Provider::Sim,
        kubeconfig: "/tmp/kubeconfig".into(),
        context: "devenv-shop".into(),
        api_server: "https://127.0.0.1:6443".into(),
        registry: devenv::providers::Registry::same("127.0.0.1:5000"),
    };
    shapes.check("Cluster", &serde_json::to_value(&cluster).unwrap());
    let memory = devenv::docker::MemoryUsage { used_bytes: 1, limit_bytes: None };
    shapes.check("Memory", &serde_json::to_value(memory).unwrap());
}

#[test]
fn in_cluster_substitutes_are_refused_where_pods_do_not_run() {
    let repo = TestRepo::new("t-cli-runtime", SERVICE);
    // sim's nodes are simulated: a StatefulSet's pod would never start.
    repo.write(".devenv/profiles/mine.yaml", "cluster:\n  provider: sim\nsubstitutes:\n  runtime: cluster\n");
    repo.devenv()
        .args(["up", "--profile", "mine"])
        .env("DOCKER_HOST", NO_DOCKER)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "error[DEV012]: .devenv/profiles/mine.yaml:4:12: substitutes.runtime: `cluster` needs a cluster whose pods run, and the `sim` provider's nodes are simulated (kwok): its pods never start",
        ))
        .stderr(predicate::str::contains("hint: remove `substitutes.runtime`"));
    assert!(!repo.state_file().exists(), "nothing was created");
}

/// A repository with what Flux would fail on or get wrong: a port substituted into a string
/// field, an `overlay.disable` entry with a typo, a `${VAR}` a Kustomization without
/// `postBuild` applies literally, and a default the profile's value replaces.
fn repo_flux_would_trip_on() -> TestRepo {
    let repo =
        TestRepo::new("t-cli-checks", "  - name: orders-db\n    kind: rds-mariadb\n    keys:\n      DB_PORT: port\n");
    let project = std::fs::read_to_string(repo.path().join("devenv.yaml")).unwrap();
    repo.write("devenv.yaml", &format!("{project}overlay:\n  disable:\n    - IngressClass/alb\n    - albb\n"));
    let kustomization = |name: &str, path: &str, post_build: &str| {
        format!(
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n{post_build}"
        )
    };
    repo.write(
        "clusters/local/apps.yaml",
        &format!(
            "{}---\n{}",
            kustomization(
                "apps",
                "./apps",
                "  postBuild:\n    substituteFrom:\n      - kind: ConfigMap\n        name: cluster-env\n"
            ),
            kustomization("alb", "./infrastructure/alb", "")
        ),
    );
    repo.write("apps/kustomization.yaml", "resources:\n  - deployment.yaml\n");
    repo.write(
        "apps/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\n  namespace: shop\nspec:\n  selector:\n    matchLabels: {app: orders}\n  template:\n    metadata:\n      labels: {app: orders}\n    spec:\n      containers:\n        - name: orders\n          image: orders:1\n          env:\n            - name: DB_PORT\n              value: \"${DB_PORT}\"\n            - name: REGION\n              value: ${AWS_REGION:=eu-west-2}\n",
    );
    repo.write("infrastructure/alb/kustomization.yaml", "resources:\n  - ingress.yaml\n  - ingressclass.yaml\n");
    repo.write(
        "infrastructure/alb/ingress.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n  namespace: shop\n  annotations:\n    alb.ingress.kubernetes.io/certificate-arn: ${CERT_ARN}\nspec:\n  ingressClassName: alb\n",
    );
    repo.write(
        "infrastructure/alb/ingressclass.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: alb\nspec:\n  controller: ingress.k8s.aws/alb\n",
    );
    repo
}

#[test]
fn plan_shows_what_flux_would_fail_on_at_the_users_files() {
    let repo = repo_flux_would_trip_on();
    let output = repo.devenv().args(["plan", "--profile", "sim"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for expected in [
        "  checks:\n",
        "  error[DEV068]: devenv.yaml:17:7: overlay.disable: `albb` matches no object the root Kustomization reaches\n    fix: did you mean `alb`?",
        "  error[DEV067]: apps/deployment.yaml:18:22: `env[name=\"DB_PORT\"].value` of container `orders` of Deployment/shop/orders is `${DB_PORT}`; Flux substitutes it with `3306` (`${DB_PORT}` from service `orders-db`'s output `port`), which reads as a number where Kubernetes wants a string",
        "    fix: write `${quote}${DB_PORT}${quote}` and add `quote: '\"'` to `spec.postBuild.substitute` of Kustomization/flux-system/apps",
        "  warning: infrastructure/alb/ingress.yaml:7:48: `${CERT_ARN}` stays as it is in the cluster: Kustomization/flux-system/alb applies this file and has no `spec.postBuild`",
        "  note: apps/deployment.yaml:20:22: `${AWS_REGION}` is `us-east-1` from the profile `sim`'s `environment`, not the default `eu-west-2` written here",
        // `Kind/name` in overlay.disable: a delete patch on the Kustomization that applies it.
        "Kustomization/flux-system/alb: sourceRef → OCIRepository/flux-system/devenv-ks-alb; deletes IngressClass/alb from what it applies (overlay.disable)",
    ] {
        assert!(stdout.contains(expected), "plan lacks {expected:?}:\n{stdout}");
    }
}

#[test]
fn a_manifest_that_does_not_parse_or_a_missing_resource_stops_plan_at_its_place() {
    let repo = repo_flux_would_trip_on();
    repo.write("apps/kustomization.yaml", "resources:\n  - deployment.yaml\n  - servce.yaml\n");
    let output = repo.devenv().args(["plan", "--profile", "sim"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("  error[DEV069]: apps/kustomization.yaml:3:5: resources[1] names `servce.yaml` (`apps/servce.yaml`), which does not exist"),
        "{stdout}"
    );
    repo.write("apps/kustomization.yaml", "resources:\n  - deployment.yaml\n");
    repo.write(
        "apps/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: orders\n   namespace: shop\n",
    );
    let output = repo.devenv().args(["plan", "--profile", "sim"]).env("DOCKER_HOST", NO_DOCKER).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("  error[DEV069]: apps/deployment.yaml:5:"), "{stdout}");
}
