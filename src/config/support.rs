//! No inert configuration: a profile field the selected provider does not use is an error
//! that names the file and the field, never silently ignored.

use std::path::Path;

use super::profile::{Isolation, Profile, Provider, SubstituteRuntime};
use super::{Error, Location, Locator, Problem, builtin};

/// Fails when the profile sets a field its provider does not use (yet).
pub(super) fn check_supported(
    repo: &Path,
    profile_name: &str,
    profile: &Profile,
    context_flag: Option<&str>,
) -> Result<(), Error> {
    let provider = profile.cluster.provider;
    let existing = provider == Provider::Existing;
    // A namespace per pull request in a shared cluster, made by `devenv preview up`.
    let preview = provider == Provider::EksNamespace;
    // A cluster someone else runs, reached through a kubeconfig context.
    let shared = existing || preview;
    let kind = provider == Provider::Kind;
    // A cluster devenv makes on this machine: kind or k3d.
    let local = matches!(provider, Provider::Kind | Provider::K3d);
    let cluster = &profile.cluster;
    let registry = &profile.registry;
    // (field, set in the profile, usable by this provider)
    let fields = [
        ("cluster.name", cluster.name.is_some(), local),
        ("cluster.kubernetesVersion", cluster.kubernetes_version.is_some(), local),
        ("cluster.image", cluster.image.is_some(), local),
        ("cluster.kindConfig", cluster.kind_config.is_some(), kind),
        ("cluster.context", cluster.context.is_some(), shared),
        ("cluster.isolation", cluster.isolation.is_some(), existing),
        ("cluster.namespace", cluster.namespace.is_some(), existing),
        ("registry.hostPort", registry.host_port.is_some(), local),
        ("registry.image", registry.image.is_some(), local),
        ("registry.url", registry.url.is_some(), shared),
        ("registry.pullUrl", registry.pull_url.is_some(), shared),
        ("flux.imageRegistry", profile.flux.image_registry.is_some(), local),
        ("quota", profile.quota.is_some(), preview),
        ("limits", profile.limits.is_some(), preview),
        ("ingressNamespace", profile.ingress_namespace.is_some(), preview),
        ("ttl", profile.ttl.is_some(), preview),
        ("maxPreviews", profile.max_previews.is_some(), preview),
        ("substitutes.runtime", profile.substitutes.runtime == SubstituteRuntime::Cluster, shared || local),
    ];
    for (field, set, usable) in fields {
        if set && !usable {
            let message = match field {
                "substitutes.runtime" if provider == Provider::Sim => "`cluster` needs a cluster whose pods run, and the `sim` provider's nodes are simulated (kwok): its pods never start".to_string(),
                "substitutes.runtime" => {
                    format!("`cluster` needs a cluster whose pods run, and the `{}` provider has none", provider.as_str())
                }
                _ => format!("not supported yet with the `{}` provider", provider.as_str()),
            };
            return Err(Error::Invalid {
                problem: Problem::Unsupported,
                at: profile_location(repo, profile_name, field),
                field: field.to_string(),
                message,
                hint: Some(match field {
                    "substitutes.runtime" => "remove `substitutes.runtime` (substitutes then run in Docker on this machine), or use the `kind`, `k3d`, `existing` or `eks-namespace` provider".to_string(),
                "quota" | "limits" | "ingressNamespace" | "ttl" | "maxPreviews" => format!("remove `{field}`: it shapes the namespaces of `devenv preview`, whose profiles use `provider: eks-namespace`"),
                    _ => format!("remove `{field}` from the profile; README.md lists what each provider uses"),
                }),
            });
        }
    }
    if context_flag.is_some() && !shared {
        return Err(Error::Invalid {
            problem: Problem::Unsupported,
            at: Location { file: "--context".to_string(), position: None },
            field: String::new(),
            message: format!("a kubeconfig context does not apply to the `{}` provider", provider.as_str()),
            hint: Some(
                "`--context` chooses the cluster of a profile with `provider: existing` or `eks-namespace`".to_string(),
            ),
        });
    }
    if let Some(namespace) = cluster.namespace.as_deref() {
        if cluster.isolation == Some(Isolation::Cluster) {
            return Err(Error::Invalid {
                problem: Problem::Invalid,
                at: profile_location(repo, profile_name, "cluster.namespace"),
                field: "cluster.namespace".to_string(),
                message: "an environment with `isolation: cluster` has no namespace of its own".to_string(),
                hint: Some("remove `cluster.namespace`, or `isolation: cluster` to share the cluster".to_string()),
            });
        }
        if let Err(why) = crate::naming::check_label(namespace, crate::naming::MAX_OBJECT_LEN) {
            return Err(Error::Invalid {
                problem: Problem::InvalidName,
                at: profile_location(repo, profile_name, "cluster.namespace"),
                field: "cluster.namespace".to_string(),
                message: format!("`{namespace}` is not a valid namespace name: it {why}"),
                hint: Some("use lowercase letters, digits and `-`, at most 63 characters".to_string()),
            });
        }
    }
    // A preview profile names the CI's registry in the user's override of it; `preview up`
    // asks for it, while `list`, `gc` and `down` do without.
    if existing && registry.url.is_none() {
        return Err(Error::Invalid {
            problem: Problem::Invalid,
            at: profile_location(repo, profile_name, "registry"),
            field: "registry.url".to_string(),
            message: format!(
                "the `{}` provider needs the registry devenv pushes the working tree to",
                provider.as_str()
            ),
            hint: Some(
                "add `registry: { url: HOST[:PORT] }` (and `pullUrl:` when the cluster reaches it under another name)"
                    .to_string(),
            ),
        });
    }
    Ok(())
}

/// Fails when a service needs this machine to reach its substitute and the profile runs
/// substitutes in the cluster: buckets and queues are made from here once the probe passes.
pub(super) fn check_runtime(
    profile: &Profile,
    services: &[super::Service],
    at: &dyn Fn(&str) -> Location,
) -> Result<(), Error> {
    if profile.substitutes.runtime != SubstituteRuntime::Cluster {
        return Ok(());
    }
    let Some((index, service)) = services
        .iter()
        .enumerate()
        .find(|(_, service)| service.substitute.resources.is_some() && !service.resources.is_empty())
    else {
        return Ok(());
    };
    let field = format!("services[{index}].resources");
    Err(Error::Invalid {
        problem: Problem::Unsupported,
        at: at(&field),
        field,
        message: format!(
            "`{}` creates its {}s from this machine, which cannot reach substitutes that run in the cluster (`substitutes.runtime: cluster`)",
            service.name,
            service.substitute.resources.as_ref().map(|r| r.create.noun()).unwrap_or("resource")
        ),
        hint: Some(
            "remove the service's `resources:`, or run substitutes in Docker (`substitutes.runtime: docker`)"
                .to_string(),
        ),
    })
}

/// Where a profile field is: in the repository's `.devenv/profiles/NAME.yaml` when that file
/// sets the field's top-level key, else in the built-in profile.
fn profile_location(repo: &Path, profile_name: &str, field: &str) -> Location {
    let top = field.split('.').next().unwrap_or(field);
    for extension in ["yaml", "yml"] {
        let relative = format!(".devenv/profiles/{profile_name}.{extension}");
        let Ok(text) = std::fs::read_to_string(repo.join(&relative)) else { continue };
        let sets_top = serde_yaml::from_str::<serde_yaml::Value>(&text)
            .ok()
            .and_then(|value| value.as_mapping().map(|m| m.contains_key(top)))
            .unwrap_or(false);
        if sets_top {
            let locator = Locator::new(&text);
            return Location { file: relative, position: locator.find(field).or_else(|| locator.find(top)) };
        }
    }
    let text = builtin::PROFILES.iter().find(|(name, _)| *name == profile_name).map(|(_, text)| *text);
    Location {
        file: format!("<built-in>/profiles/{profile_name}.yaml"),
        position: text.and_then(|text| Locator::new(text).find(field)),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{self, Selection};

    fn load(profile: &str, flag: Option<&str>) -> Result<config::Config, config::Error> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("devenv.yaml"),
            "project: shop\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: env\n",
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join(".devenv/profiles")).unwrap();
        std::fs::write(dir.path().join(".devenv/profiles/mine.yaml"), profile).unwrap();
        let selection = Selection {
            repo: Some(dir.path().into()),
            profile: Some("mine".into()),
            context: flag.map(str::to_string),
            ..Default::default()
        };
        config::load(&selection, dir.path())
    }

    fn message(result: Result<config::Config, config::Error>) -> String {
        result.map(|_| "ok".to_string()).unwrap_or_else(|e| e.to_string())
    }

    #[test]
    fn fields_a_running_provider_does_not_use_are_errors_naming_file_and_field() {
        assert_eq!(
            message(load("cluster:\n  provider: sim\nquota:\n  pods: 5\n", None)),
            ".devenv/profiles/mine.yaml:4:7: quota: not supported yet with the `sim` provider"
        );
        assert_eq!(
            message(load("cluster:\n  provider: kind\nlimits:\n  defaultCpu: 1\n", None)),
            ".devenv/profiles/mine.yaml:4:13: limits: not supported yet with the `kind` provider"
        );
        assert_eq!(
            message(load("cluster:\n  provider: existing\n  context: a\ningressNamespace: ingress-nginx\n", None)),
            ".devenv/profiles/mine.yaml:4:19: ingressNamespace: not supported yet with the `existing` provider"
        );
        assert_eq!(
            message(load("cluster:\n  provider: sim\n  kubernetesVersion: \"1.36\"\n", None)),
            ".devenv/profiles/mine.yaml:3:22: cluster.kubernetesVersion: not supported yet with the `sim` provider"
        );
        assert_eq!(
            message(load("cluster:\n  provider: none\nregistry:\n  hostPort: 5001\n", None)),
            ".devenv/profiles/mine.yaml:4:13: registry.hostPort: not supported yet with the `none` provider"
        );
        assert_eq!(
            message(load("cluster:\n  provider: sim\nsubstitutes:\n  runtime: cluster\n", None)),
            ".devenv/profiles/mine.yaml:4:12: substitutes.runtime: `cluster` needs a cluster whose pods run, and the `sim` provider's nodes are simulated (kwok): its pods never start"
        );
        assert_eq!(
            message(load("cluster:\n  provider: none\nsubstitutes:\n  runtime: cluster\n", None)),
            ".devenv/profiles/mine.yaml:4:12: substitutes.runtime: `cluster` needs a cluster whose pods run, and the `none` provider has none"
        );
        assert_eq!(message(load("cluster:\n  provider: kind\nsubstitutes:\n  runtime: cluster\n", None)), "ok");
        assert_eq!(
            message(load("cluster:\n  provider: sim\n", Some("kind-dev"))),
            "--context: a kubeconfig context does not apply to the `sim` provider"
        );
        assert!(
            message(load("cluster:\n  provider: existing\n", None))
                .contains("registry.url: the `existing` provider needs")
        );
        let existing =
            load("cluster:\n  provider: existing\n  context: a\nregistry:\n  url: 127.0.0.1:5000\n", Some("b"));
        assert_eq!(existing.unwrap().context.as_deref(), Some("b"), "--context wins over the profile");
        assert_eq!(
            message(load("cluster:\n  provider: k3d\n  kindConfig: kind.yaml\n", None)),
            ".devenv/profiles/mine.yaml:3:15: cluster.kindConfig: not supported yet with the `k3d` provider"
        );
        let k3d = "cluster:\n  provider: k3d\n  name: mine\n  kubernetesVersion: \"1.33.1\"\nregistry:\n  hostPort: 5001\n  image: registry:3\nflux:\n  imageRegistry: mirror.example.com/fluxcd\n";
        assert_eq!(message(load(k3d, None)), "ok", "every field the k3d provider uses");
        assert_eq!(
            message(load("cluster:\n  provider: kind\n  isolation: namespace\n", None)),
            ".devenv/profiles/mine.yaml:3:14: cluster.isolation: not supported yet with the `kind` provider"
        );
        // Namespaces of an `existing` cluster.
        let existing = |extra: &str| {
            load(&format!("cluster:\n  provider: existing\n{extra}registry:\n  url: 127.0.0.1:5000\n"), None)
        };
        let shared = existing("").unwrap();
        assert_eq!(shared.environment_namespace(), Some(format!("devenv-{}", shared.env)), "shared by default");
        assert_eq!(shared.flux_namespace(), format!("devenv-{}", shared.env));
        let own = existing("  isolation: cluster\n").unwrap();
        assert_eq!((own.environment_namespace(), own.flux_namespace()), (None, "flux-system".to_string()));
        assert_eq!(existing("  namespace: team-a\n").unwrap().environment_namespace().as_deref(), Some("team-a"));
        assert_eq!(
            message(existing("  isolation: cluster\n  namespace: team-a\n")),
            ".devenv/profiles/mine.yaml:4:14: cluster.namespace: an environment with `isolation: cluster` has no namespace of its own"
        );
        assert_eq!(
            message(existing("  namespace: Team_A\n")),
            ".devenv/profiles/mine.yaml:3:14: cluster.namespace: `Team_A` is not a valid namespace name: it contains `T`"
        );
        // Providers that cannot run yet keep failing with DEV040 later, whatever they declare.
        assert_eq!(message(load("cluster:\n  provider: eks-namespace\nquota:\n  pods: 5\nttl: 72h\n", None)), "ok");
    }
}
