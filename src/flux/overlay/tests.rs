use super::*;

/// Settings like a typical devenv.yaml's, shared with the packing tests.
pub(crate) fn settings() -> Settings {
    Settings {
        flux_namespace: "flux-system".into(),
        relocate_to: None,
        service_account: None,
        own_source: SourceRef::parse("GitRepository/flux-system").unwrap(),
        config_map: "cluster-env".into(),
        secret: "cluster-env-secrets".into(),
        disable: vec!["aws-load-balancer-controller".into(), "security/external-secrets-aws".into()],
        max_replicas: Some(1),
        patches: vec![],
        source_urls: vec![],
        registry: "127.0.0.1:5000".into(),
        drop_webhooks: false,
        clashing: Default::default(),
        published_charts: vec![],
        helm_repositories: Default::default(),
        deletions: Default::default(),
    }
}

fn rewritten(text: &str) -> Rewritten {
    rewrite(text, &settings()).unwrap().expect("the file changes")
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect()
}

const CHILD: &str = "\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: apps
  namespace: flux-system
spec:
  interval: 10m
  path: ./apps/production
  sourceRef:
    kind: GitRepository
    name: flux-system
  patches:
    - target:
        kind: Deployment
        name: orders
      patch: |
        - op: add
          path: /metadata/labels/team
          value: lending
  postBuild:
    substitute:
      CLUSTER_NAME: production
    substituteFrom:
      - kind: ConfigMap
        name: cluster-env
";

#[test]
fn a_child_keeps_its_patches_and_inline_substitutions() {
    let out = rewritten(CHILD);
    let doc = &documents(&out.text)[0];
    let spec = &doc["spec"];
    assert_eq!(spec["sourceRef"]["kind"], "OCIRepository");
    assert_eq!(spec["sourceRef"]["name"], "devenv-ks-apps", "an artifact of its own");
    assert_eq!(spec["sourceRef"]["namespace"], "flux-system");
    let repointed = Repointed {
        kustomization: "flux-system/apps".into(),
        path: "apps/production".into(),
        source: "devenv-ks-apps".into(),
    };
    assert_eq!(out.repointed, [repointed]);
    assert_eq!(spec["postBuild"]["substitute"]["CLUSTER_NAME"], "production");
    let from = spec["postBuild"]["substituteFrom"].as_sequence().unwrap();
    assert_eq!(from.len(), 2, "the existing ConfigMap entry is not duplicated: {from:?}");
    assert_eq!(from[1]["kind"], "Secret");
    assert_eq!(from[1]["name"], "cluster-env-secrets");
    let patches = spec["patches"].as_sequence().unwrap();
    assert_eq!(patches.len(), 3, "the user's patch comes first, then the replica caps");
    assert_eq!(patches[0]["target"]["name"], "orders");
    assert_eq!(patches[1]["target"]["kind"], "Deployment");
    assert!(patches[1]["patch"].as_str().unwrap().contains("path: /spec/replicas"));
    assert_eq!(out.substitution_namespaces.iter().collect::<Vec<_>>(), ["flux-system"]);
}

#[test]
fn nested_kustomizations_and_sources_in_one_file_are_reached() {
    let text = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: bitnami
  namespace: flux-system
spec:
  url: https://charts.example.com
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: payments
  namespace: flux-system
spec:
  path: ./apps/payments
  sourceRef:
    kind: GitRepository
    name: flux-system
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: redis
  namespace: payments
spec:
  chart:
    spec:
      chart: redis
      sourceRef:
        kind: HelmRepository
        name: bitnami
        namespace: flux-system
";
    let out = rewritten(text);
    let docs = documents(&out.text);
    assert_eq!(docs.len(), 3);
    assert_eq!(docs[0]["spec"]["url"], "https://charts.example.com", "sources stay as they are");
    assert_eq!(docs[1]["spec"]["sourceRef"]["name"], "devenv-ks-payments");
    assert!(docs[1]["spec"].get("postBuild").is_none(), "no substitution is switched on where there was none");
    let renderers = docs[2]["spec"]["postRenderers"].as_sequence().unwrap();
    assert_eq!(renderers[0]["kustomize"]["patches"].as_sequence().unwrap().len(), 2);
    assert_eq!(docs[2]["spec"]["chart"]["spec"]["sourceRef"]["name"], "bitnami");
}

#[test]
fn a_kustomization_in_another_namespace_reaches_the_artifact_and_its_own_env() {
    let text = CHILD
        .replace("namespace: flux-system\nspec", "namespace: team-a\nspec")
        .replace("    name: flux-system\n  patches", "    name: flux-system\n    namespace: flux-system\n  patches");
    let out = rewritten(&text);
    let doc = &documents(&out.text)[0];
    assert_eq!(doc["spec"]["sourceRef"]["name"], "devenv-ks-team-a-apps");
    assert_eq!(doc["spec"]["sourceRef"]["namespace"], "flux-system");
    assert!(out.substitution_namespaces.contains("team-a"));
}

#[test]
fn a_source_ref_to_another_source_is_left_alone() {
    let text =
        CHILD.replace("kind: GitRepository\n    name: flux-system", "kind: GitRepository\n    name: platform-charts");
    let out = rewritten(&text);
    let doc = &documents(&out.text)[0];
    assert_eq!(doc["spec"]["sourceRef"]["kind"], "GitRepository");
    assert_eq!(doc["spec"]["sourceRef"]["name"], "platform-charts");
    assert!(!out.changes.iter().any(|c| c.what.starts_with("sourceRef")));
}

#[test]
fn a_same_named_source_in_another_namespace_is_left_alone() {
    let text =
        CHILD.replace("    name: flux-system\n  patches", "    name: flux-system\n    namespace: other\n  patches");
    let doc = &documents(&rewritten(&text).text)[0];
    assert_eq!(doc["spec"]["sourceRef"]["kind"], "GitRepository");
}

#[test]
fn disabled_components_are_removed_and_dependants_stop_waiting_for_them() {
    let text = "\
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: aws-load-balancer-controller
  namespace: flux-system
spec:
  path: ./infrastructure/aws-lbc
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: kustomize.toolkit.fluxcd.io/v1
kind: Kustomization
metadata:
  name: ingress
  namespace: flux-system
spec:
  dependsOn:
    - name: aws-load-balancer-controller
    - name: cert-manager
  path: ./infrastructure/ingress
  sourceRef: {kind: GitRepository, name: flux-system}
---
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: external-secrets-aws
  namespace: security
spec: {}
";
    let out = rewritten(text);
    let docs = documents(&out.text);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0]["metadata"]["name"], "ingress");
    let depends_on = docs[0]["spec"]["dependsOn"].as_sequence().unwrap();
    assert_eq!(depends_on.len(), 1);
    assert_eq!(depends_on[0]["name"], "cert-manager");
    assert!(out.changes.contains(&Change {
        object: "HelmRelease/security/external-secrets-aws".into(),
        what: "removed (overlay.disable)".into()
    }));
}

#[test]
fn files_without_flux_objects_are_untouched() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: scripts\n  labels:\n    kustomize.toolkit.fluxcd.io/substitute: disabled\ndata:\n  run.sh: echo ${HOME}\n";
    assert!(rewrite(text, &settings()).unwrap().is_none());
    assert!(!may_hold_flux_objects("apiVersion: apps/v1\nkind: Deployment\n"));
}

#[test]
fn user_patches_are_appended() {
    let mut settings = settings();
    settings.max_replicas = None;
    settings.patches = vec![serde_yaml::from_str("{target: {kind: Ingress}, patch: '[]'}").unwrap()];
    let out = rewrite(CHILD, &settings).unwrap().unwrap();
    let patches = documents(&out.text)[0]["spec"]["patches"].as_sequence().unwrap().clone();
    assert_eq!(patches.len(), 2);
    assert_eq!(patches[1]["target"]["kind"], "Ingress");
}

#[test]
fn rewriting_twice_gives_the_same_text() {
    let once = rewritten(CHILD).text;
    let again = rewritten(CHILD).text;
    assert_eq!(once, again);
}

#[test]
fn source_refs_parse() {
    assert_eq!(SourceRef::parse("GitRepository/flux-system").unwrap().name, "flux-system");
    assert!(SourceRef::parse("flux-system").is_none());
    assert!(SourceRef::parse("A/b/c").is_none());
}

#[test]
fn source_names_are_unique_per_kustomization_and_short_enough() {
    let settings = settings();
    assert_eq!(source_name("flux-system", "apps", &settings), "devenv-ks-apps");
    assert_eq!(source_name("team-a", "apps", &settings), "devenv-ks-team-a-apps");
    let long = "a".repeat(60);
    let one = source_name("team-a", &long, &settings);
    let other = source_name("team-b", &long, &settings);
    assert!(one.len() <= 63 && other.len() <= 63, "{one}");
    assert_ne!(one, other);
    assert!(is_devenv_source(&one) && is_devenv_source(SOURCE_NAME) && !is_devenv_source("flux-system"));
    let substituted = source_name("flux-system", "apps-${CLUSTER_NAME}", &settings);
    assert!(crate::naming::check_label(&substituted, 63).is_ok(), "{substituted}");
    assert!(substituted.starts_with("devenv-ks-apps-cluster-name-"), "{substituted}");
}

const SOURCES: &str = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: OCIRepository
metadata:
  name: audit-chart
  namespace: lending
spec:
  url: oci://ghcr.io/lender/charts/audit
  ref:
    tag: 0.1.0
  verify:
    provider: cosign
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: internal
spec:
  type: oci
  url: oci://ghcr.io/lender/charts-internal
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: GitRepository
metadata:
  name: shared
spec:
  url: https://github.com/lender/shared
  verify:
    mode: HEAD
";

#[test]
fn the_source_url_map_repoints_matching_sources_only() {
    let mut settings = settings();
    settings.source_urls = vec![
        SourceUrl {
            url: "oci://ghcr.io/lender/charts".into(),
            to: "oci://{{ registry }}/charts".into(),
            insecure: true,
            drop_verify: true,
        },
        SourceUrl {
            url: "https://github.com/lender/".into(),
            to: "http://127.0.0.1:3000/mirror".into(),
            insecure: true,
            drop_verify: false,
        },
    ];
    let out = rewrite(SOURCES, &settings).unwrap().unwrap();
    let docs = documents(&out.text);
    let chart = &docs[0]["spec"];
    assert_eq!(chart["url"], "oci://127.0.0.1:5000/charts/audit");
    assert_eq!(chart["insecure"], true);
    assert!(chart.get("verify").is_none(), "verify dropped where asked");
    assert_eq!(docs[1]["spec"]["url"], "oci://ghcr.io/lender/charts-internal", "a prefix matches only up to a `/`");
    let git = &docs[2]["spec"];
    assert_eq!(git["url"], "http://127.0.0.1:3000/mirror/shared");
    assert!(git.get("insecure").is_none(), "GitRepository has no `insecure`");
    assert_eq!(git["verify"]["mode"], "HEAD", "verify kept unless asked");
    let what: Vec<&str> = out.changes.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "url → oci://127.0.0.1:5000/charts/audit (insecure), verify dropped",
            "url → http://127.0.0.1:3000/mirror/shared"
        ]
    );
    assert_eq!(out.diffs.len(), 2, "a diff per changed object");
    assert!(out.diffs[0].before.contains("ghcr.io") && out.diffs[0].after.as_ref().unwrap().contains("127.0.0.1"));
}

#[test]
fn a_helm_repository_moved_between_http_and_oci_gets_the_matching_type() {
    let mut settings = settings();
    settings.source_urls = vec![
        SourceUrl {
            url: "https://charts.bitnami.com".into(),
            to: "oci://{{ registry }}/bitnami".into(),
            insecure: true,
            drop_verify: false,
        },
        SourceUrl {
            url: "oci://ghcr.io/lender/internal".into(),
            to: "http://127.0.0.1:8080/internal".into(),
            insecure: false,
            drop_verify: false,
        },
    ];
    let text = "\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: bitnami
  namespace: flux-system
spec:
  interval: 1h
  url: https://charts.bitnami.com/bitnami
---
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: internal
  namespace: flux-system
spec:
  type: oci
  url: oci://ghcr.io/lender/internal
";
    let out = rewrite(text, &settings).unwrap().unwrap();
    let docs = documents(&out.text);
    assert_eq!(docs[0]["spec"]["url"], "oci://127.0.0.1:5000/bitnami/bitnami");
    assert_eq!(docs[0]["spec"]["type"], "oci", "source-controller refuses an oci:// URL on a default repository");
    assert_eq!(docs[0]["spec"]["insecure"], true);
    assert_eq!(docs[1]["spec"]["url"], "http://127.0.0.1:8080/internal");
    assert!(docs[1]["spec"].get("type").is_none(), "back to the default type: {:?}", docs[1]["spec"]);
    let what: Vec<&str> = out.changes.iter().map(|c| c.what.as_str()).collect();
    assert_eq!(
        what,
        [
            "url → oci://127.0.0.1:5000/bitnami/bitnami, type → oci (insecure)",
            "url → http://127.0.0.1:8080/internal, type → default"
        ]
    );
}

const REPO_CHART: &str = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: statements
  namespace: lending
spec:
  interval: 10m
  chart:
    spec:
      chart: ./charts/statements
      sourceRef:
        kind: GitRepository
        name: flux-system
        namespace: flux-system
  values:
    region: eu-west-2
";

#[test]
fn a_chart_from_the_repository_is_served_from_the_working_tree() {
    let out = rewritten(REPO_CHART);
    let spec = &documents(&out.text)[0]["spec"];
    assert!(spec.get("chart").is_none(), "HelmCharts cannot read an OCIRepository");
    assert_eq!(spec["chartRef"]["kind"], "OCIRepository");
    assert_eq!(spec["chartRef"]["name"], "devenv-chart-charts-statements");
    assert_eq!(spec["chartRef"]["namespace"], "flux-system");
    assert_eq!(spec["values"]["region"], "eu-west-2", "values stay");
    let chart = LocalChart {
        path: "charts/statements".into(),
        source: "devenv-chart-charts-statements".into(),
        values_files: vec![],
        ignore_missing_values_files: false,
        version: None,
    };
    assert_eq!(out.local_charts, [chart]);
}

#[test]
fn a_published_chart_asked_of_a_helm_repository_is_installed_from_the_working_tree() {
    let mut settings = settings();
    settings.published_charts = vec![PublishedChart {
        url: "oci://127.0.0.1:5000/charts/stable".into(),
        name: "greeter".into(),
        path: "charts/greeter".into(),
    }];
    settings.helm_repositories = BTreeMap::from([
        ("platform/example".to_string(), "oci://127.0.0.1:5000/charts/stable".to_string()),
        ("platform/other".to_string(), "https://charts.example.org/other".to_string()),
    ]);
    let release = |repository: &str, chart: &str| {
        format!(
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: greeter\n  namespace: web\nspec:\n  chart:\n    spec:\n      chart: {chart}\n      version: 0.1.x\n      valuesFiles: [values.yaml, values-local.yaml]\n      sourceRef:\n        kind: HelmRepository\n        name: {repository}\n        namespace: platform\n"
        )
    };
    let out = rewrite(&release("example", "greeter"), &settings).unwrap().unwrap();
    let spec = &documents(&out.text)[0]["spec"];
    assert_eq!(spec["chartRef"]["name"], out.local_charts[0].source);
    assert!(out.local_charts[0].source.starts_with("devenv-chart-charts-greeter-"), "{:?}", out.local_charts);
    assert_eq!(out.local_charts[0].path, "charts/greeter");
    assert_eq!(out.local_charts[0].values_files, ["charts/greeter/values.yaml", "charts/greeter/values-local.yaml"]);
    assert_eq!(out.local_charts[0].version.as_deref(), Some("0.1.x"));
    // Another chart, or another repository, is left to Flux.
    for (repository, chart) in [("example", "other"), ("other", "greeter")] {
        let out = rewrite(&release(repository, chart), &settings).unwrap().unwrap();
        assert!(out.local_charts.is_empty(), "{repository} {chart}");
        assert_eq!(documents(&out.text)[0]["spec"]["chart"]["spec"]["chart"], chart);
    }
}

#[test]
fn a_chart_from_another_source_is_left_alone() {
    let text = REPO_CHART
        .replace("kind: GitRepository\n        name: flux-system", "kind: HelmRepository\n        name: bitnami");
    let out = rewritten(&text);
    let spec = &documents(&out.text)[0]["spec"];
    assert_eq!(spec["chart"]["spec"]["sourceRef"]["name"], "bitnami");
    assert!(out.local_charts.is_empty());
}

#[test]
fn on_sim_admission_webhooks_are_deleted_by_kustomizations_and_helm_releases() {
    let mut settings = settings();
    settings.drop_webhooks = true;
    let out = rewrite(CHILD, &settings).unwrap().unwrap();
    let patches = documents(&out.text)[0]["spec"]["patches"].as_sequence().unwrap().clone();
    let targets: Vec<&str> = patches.iter().filter_map(|p| p["target"]["kind"].as_str()).collect();
    assert!(targets.contains(&"ValidatingWebhookConfiguration") && targets.contains(&"MutatingWebhookConfiguration"));
    assert!(patches.iter().any(|p| p["patch"].as_str().unwrap_or_default().starts_with("$patch: delete")));

    let out = rewrite(REPO_CHART, &settings).unwrap().unwrap();
    let renderers = documents(&out.text)[0]["spec"]["postRenderers"].as_sequence().unwrap().clone();
    assert_eq!(renderers[0]["kustomize"]["patches"].as_sequence().unwrap().len(), 4, "replicas and webhooks");
    assert!(out.changes.iter().any(|c| c.what == "postRenderers += replicas set to 1, admission webhooks removed"));
}

#[test]
fn values_files_make_a_chart_of_their_own() {
    let with_values = |files: &str| {
        REPO_CHART.replace(
            "      chart: ./charts/statements\n",
            &format!("      chart: ./charts/statements\n      valuesFiles: [{files}]\n"),
        )
    };
    let out = rewritten(&with_values("./charts/statements/values.yaml, apps/statements-values.yaml"));
    let chart = &out.local_charts[0];
    assert_eq!(chart.values_files, ["charts/statements/values.yaml", "apps/statements-values.yaml"]);
    assert!(chart.source.starts_with("devenv-chart-charts-statements-"), "{}", chart.source);
    assert_eq!(documents(&out.text)[0]["spec"]["chartRef"]["name"], chart.source.as_str());
    let what = &out.changes[0].what;
    assert!(
        what.contains("values.yaml = valuesFiles charts/statements/values.yaml, apps/statements-values.yaml merged"),
        "{what}"
    );
    let other = rewritten(&with_values("apps/statements-values.yaml"));
    assert_ne!(other.local_charts[0].source, chart.source, "other values, another chart");
    // A lone `values.yaml` means the chart's own values, as in source-controller.
    let own = rewritten(&with_values("values.yaml"));
    assert_eq!(own.local_charts[0].source, "devenv-chart-charts-statements");
    assert!(own.local_charts[0].values_files.is_empty());
}

const RELEASE_WITH_REPOSITORY: &str = "\
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: search
  namespace: search
spec:
  dependsOn:
    - name: platform
      namespace: flux-system
  chart:
    spec:
      chart: opensearch
      sourceRef:
        kind: HelmRepository
        name: opensearch
        namespace: flux-system
";

#[test]
fn in_a_shared_cluster_every_flux_object_moves_into_the_environment_namespace() {
    let settings = Settings { relocate_to: Some("devenv-alice".into()), ..settings() };
    let out = rewrite(CHILD, &settings).unwrap().unwrap();
    let spec = &documents(&out.text)[0]["spec"];
    assert_eq!(documents(&out.text)[0]["metadata"]["namespace"], "devenv-alice");
    assert_eq!(spec["sourceRef"]["namespace"], "devenv-alice", "devenv's artifact lives beside it");
    assert_eq!(spec["targetNamespace"], "devenv-alice", "what it applies lands there too");
    assert_eq!(out.repointed[0].kustomization, "devenv-alice/apps");
    assert_eq!(out.keys, ["Kustomization/devenv-alice/apps"], "reported where it lives");
    assert_eq!(out.substitution_namespaces, BTreeSet::from(["devenv-alice".to_string()]));
    let patches: Vec<&str> =
        spec["patches"].as_sequence().unwrap().iter().filter_map(|p| p["patch"].as_str()).collect();
    assert!(patches.iter().any(|p| p.contains("$patch: delete") && p.contains("kind: Namespace")), "{patches:?}");
    assert!(
        patches
            .iter()
            .any(|p| p.contains("kind: CustomResourceDefinition") && p.contains(&format!("{PRUNE}: disabled"))),
        "{patches:?}"
    );
    assert!(patches.iter().any(|p| p.contains("path: /metadata/labels/team")), "the repository's own patch stays");

    let out = rewrite(RELEASE_WITH_REPOSITORY, &settings).unwrap().unwrap();
    let release = &documents(&out.text)[0];
    assert_eq!(release["metadata"]["namespace"], "devenv-alice");
    assert_eq!(release["spec"]["dependsOn"][0]["namespace"], "devenv-alice");
    assert_eq!(release["spec"]["chart"]["spec"]["sourceRef"]["namespace"], "devenv-alice");
    assert_eq!(release["spec"]["targetNamespace"], "devenv-alice");
    assert_eq!(release["spec"]["storageNamespace"], "devenv-alice");
}

#[test]
fn with_the_cluster_to_itself_flux_objects_stay_where_the_repository_puts_them() {
    let out = rewrite(RELEASE_WITH_REPOSITORY, &Settings { max_replicas: None, ..settings() }).unwrap();
    assert!(out.is_none(), "nothing to change");
    assert_eq!(rewritten(CHILD).documents_namespace(), "flux-system");
}

impl Rewritten {
    fn documents_namespace(&self) -> String {
        documents(&self.text)[0]["metadata"]["namespace"].as_str().unwrap().to_string()
    }
}

#[test]
fn in_a_preview_every_kustomization_and_helm_release_acts_as_the_preview_account() {
    let settings = Settings {
        relocate_to: Some("pr-7-shop".into()),
        service_account: Some("devenv-preview".into()),
        ..settings()
    };
    let out = rewrite(CHILD, &settings).unwrap().unwrap();
    assert_eq!(documents(&out.text)[0]["spec"]["serviceAccountName"], "devenv-preview");
    assert!(
        out.changes.iter().any(|c| c.what == "acts as ServiceAccount devenv-preview (spec.serviceAccountName)"),
        "{:?}",
        out.changes
    );
    let out = rewrite(RELEASE_WITH_REPOSITORY, &settings).unwrap().unwrap();
    assert_eq!(documents(&out.text)[0]["spec"]["serviceAccountName"], "devenv-preview");
    // A repository's own account is replaced: it would act with rights the preview lacks.
    let own = CHILD.replace("spec:\n", "spec:\n  serviceAccountName: kustomize-controller\n");
    let out = rewrite(&own, &settings).unwrap().unwrap();
    assert_eq!(documents(&out.text)[0]["spec"]["serviceAccountName"], "devenv-preview");
}
