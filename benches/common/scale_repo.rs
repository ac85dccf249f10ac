//! A generated GitOps repository the size of a lender's platform: 100 Flux Kustomizations in
//! `dependsOn` chains of five, 60 services (50 Deployments, 10 HelmReleases of a chart in the
//! repository), `${VAR}`s from two substitutes (MariaDB and Redis) and from each
//! Kustomization's own `postBuild.substitute`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

pub const KUSTOMIZATIONS: usize = 100;
pub const CHAIN: usize = 5;
pub const SERVICES: usize = 60;
/// Every sixth service is a HelmRelease: ten of the sixty.
const RELEASE_EVERY: usize = 6;

/// Writes the repository into `repo`; `images` are the substitutes' test images.
pub fn generate(repo: &Path, mariadb_image: &str, redis_image: &str) {
    let write = |relative: &str, text: &str| {
        let path = repo.join(relative);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    };
    write(
        "devenv.yaml",
        "project: scale\ndefaultProfile: sim\nflux:\n  path: clusters/local\nenvironment:\n  configMap:\n    name: cluster-env\n    namespace: flux-system\nservices:\n  - name: orders-db\n    kind: rds-mariadb\n    params:\n      database: orders\n    keys:\n      DB_HOST: host\n      DB_PORT: port\n      DB_USER: username\n      DB_PASSWORD: password\n  - name: cache\n    kind: elasticache-redis\n    keys:\n      CACHE_HOST: host\n      CACHE_PORT: port\n      CACHE_PASSWORD: password\noverlay:\n  maxReplicas: 1\n",
    );
    write(".devenv/substitutes/rds-mariadb.yaml", &format!("image: {mariadb_image}\n"));
    write(".devenv/substitutes/elasticache-redis.yaml", &format!("image: {redis_image}\n"));
    write(
        "clusters/local/flux-system/gotk-sync.yaml",
        "apiVersion: source.toolkit.fluxcd.io/v1\nkind: GitRepository\nmetadata:\n  name: flux-system\n  namespace: flux-system\nspec:\n  interval: 1m\n  url: ssh://git@example.com/lender/platform\n  ref:\n    branch: main\n",
    );
    let mut kustomizations = String::new();
    for i in 0..KUSTOMIZATIONS {
        let depends_on = match i % CHAIN {
            0 => String::new(),
            _ => format!("  dependsOn:\n    - name: ks-{}\n", i - 1),
        };
        write!(
            kustomizations,
            "---\napiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: ks-{i}\n  namespace: flux-system\nspec:\n{depends_on}  interval: 10m\n  path: ./apps/ks-{i}\n  prune: true\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n  postBuild:\n    substitute:\n      SERVICE_NAME: service-{i}\n    substituteFrom:\n      - kind: ConfigMap\n        name: cluster-env\n"
        )
        .unwrap();
    }
    write("clusters/local/kustomizations.yaml", &kustomizations);
    for i in 0..KUSTOMIZATIONS {
        let dir = format!("apps/ks-{i}");
        let mut resources = vec!["namespace.yaml", "settings.yaml"];
        write(
            &format!("{dir}/namespace.yaml"),
            &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team-{i}\n"),
        );
        write(
            &format!("{dir}/settings.yaml"),
            &format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: team-{i}\ndata:\n  service: ${{SERVICE_NAME}}\n  database: \"${{DB_HOST}}:${{DB_PORT}}\"\n"
            ),
        );
        if i < SERVICES && i % RELEASE_EVERY == RELEASE_EVERY - 1 {
            resources.push("release.yaml");
            write(&format!("{dir}/release.yaml"), &release(i));
        } else if i < SERVICES {
            resources.push("deployment.yaml");
            write(&format!("{dir}/deployment.yaml"), &deployment(i));
        }
        let list: String = resources.iter().map(|r| format!("  - {r}\n")).collect();
        write(
            &format!("{dir}/kustomization.yaml"),
            &format!("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n{list}"),
        );
    }
    write("charts/service/Chart.yaml", "apiVersion: v2\nname: service\nversion: 0.1.0\n");
    write("charts/service/values.yaml", "image: registry.example.com/lender/service:1.0.0\ndatabase: {}\n");
    write(
        "charts/service/templates/deployment.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {{ .Release.Name }}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {{ .Release.Name }}\n  template:\n    metadata:\n      labels:\n        app: {{ .Release.Name }}\n    spec:\n      containers:\n        - name: app\n          image: {{ .Values.image }}\n          env:\n            - name: DB_ADDRESS\n              value: \"{{ .Values.database.host }}:{{ .Values.database.port }}\"\n",
    );
}

/// The manifest an edit of service `i` changes: its Deployment's image tag.
pub fn deployment_path(i: usize) -> String {
    format!("apps/ks-{i}/deployment.yaml")
}

fn deployment(i: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: service-{i}\n  namespace: team-{i}\nspec:\n  replicas: 2\n  selector:\n    matchLabels:\n      app: service-{i}\n  template:\n    metadata:\n      labels:\n        app: service-{i}\n    spec:\n      containers:\n        - name: app\n          image: registry.example.com/lender/service-{i}:1.0.0\n          env:\n            - name: SERVICE_NAME\n              value: ${{SERVICE_NAME}}\n            - name: DB_ADDRESS\n              value: \"${{DB_HOST}}:${{DB_PORT}}\"\n            - name: DB_USER\n              value: ${{DB_USER}}\n            - name: CACHE_ADDRESS\n              value: \"${{CACHE_HOST}}:${{CACHE_PORT}}\"\n"
    )
}

fn release(i: usize) -> String {
    format!(
        "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: service-{i}\n  namespace: team-{i}\nspec:\n  interval: 10m\n  chart:\n    spec:\n      chart: ./charts/service\n      sourceRef:\n        kind: GitRepository\n        name: flux-system\n        namespace: flux-system\n  values:\n    database:\n      host: ${{DB_HOST}}\n      port: \"${{DB_PORT}}\"\n"
    )
}
