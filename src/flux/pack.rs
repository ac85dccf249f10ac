//! Packs the working tree into deterministic tar.gz artifacts: one for the root Kustomization
//! and one per Kustomization it reaches, each holding the files that Kustomization reads.
//! Uncommitted edits are included (that is the point); ignored files, `.git`, `.devenv/` and
//! `<path>/flux-system/` are not. The same tree always gives the same bytes: entries are
//! sorted, and times, owners and modes are normalised.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

use super::artifact::{Content, Entry, archive_tree};
use super::closure;
use super::files::{self, MAX_FILE_SIZE, Texts, is_executable, is_yaml, list_tree};
use super::names::{self, REGISTRY_PLACEHOLDER};
use super::overlay::{self, Change, Rewritten, Settings};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the working tree, or archiving it.
    #[error(transparent)]
    Files(#[from] files::Error),
    #[error("cannot apply the local overlay to `{path}`")]
    Overlay {
        path: String,
        #[source]
        source: overlay::Error,
    },
    #[error("`{first}` and `{second}` both define {object} once the environment's Flux objects share its namespace")]
    Collision { object: String, first: String, second: String },
    #[error("a HelmRelease in `{file}` takes its chart from the repository")]
    Chart {
        file: String,
        #[source]
        source: Box<super::charts::Error>,
    },
}

/// One artifact: the files one Kustomization reads, packed.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The OCIRepository that serves it.
    pub source: String,
    /// `namespace/name` of the Kustomization that reads it.
    pub kustomization: String,
    /// The directory that Kustomization builds.
    pub path: String,
    /// The tar.gz bytes, in memory or (past [`SPOOL_IN_MEMORY`](super::artifact::SPOOL_IN_MEMORY)) in an unnamed temporary file.
    pub content: Content,
    /// `sha256:<hex>` of the bytes.
    pub digest: String,
    pub files: usize,
}

/// A chart a HelmRelease takes from the repository, packaged from the working tree.
#[derive(Debug, Clone)]
pub struct PackedChart {
    /// The OCIRepository that serves it.
    pub source: String,
    pub path: String,
    pub metadata: super::charts::Metadata,
    pub bytes: Vec<u8>,
}

/// The packed tree: the root's artifact first, then one per Kustomization it reaches.
#[derive(Debug, Clone)]
pub struct Packed {
    pub artifacts: Vec<Artifact>,
    /// The files of the tree, as `list_files` gives them.
    pub paths: Vec<String>,
    /// YAML files of the tree left out because they are symbolic links.
    pub linked_manifests: Vec<String>,
    /// Size of the files before compression.
    pub raw_bytes: u64,
    /// What the overlay changed, by file, in the files the root reaches.
    pub changes: Vec<(String, Change)>,
    /// The changed Flux objects before and after, by file.
    pub diffs: Vec<(String, overlay::ObjectDiff)>,
    /// Namespaces whose Kustomizations substitute from the environment ConfigMap.
    pub substitution_namespaces: BTreeSet<String>,
    /// The Flux objects the root reaches, after the rewrite.
    pub objects: Vec<serde_yaml::Value>,
    /// The file each of those objects (`Kind/namespace/name`) comes from.
    pub origins: BTreeMap<String, String>,
    /// Charts the reached HelmReleases take from the repository.
    pub charts: Vec<PackedChart>,
    /// The tree's text files as read, before the overlay, for the contract and the checks.
    pub texts: Texts,
    /// What `{{ registry }}` and the re-pointed charts' URLs were filled with.
    pub registry: String,
    archiving: Archiving,
}

/// What archiving the artifacts again needs: the rewritten text files in memory (the others
/// are read from the working tree), and the files of each artifact.
#[derive(Debug, Clone, Default)]
struct Archiving {
    root: PathBuf,
    raw_names: BTreeMap<String, PathBuf>,
    contents: Contents,
    /// The files of each artifact, in the order of `Packed::artifacts`.
    members: Vec<BTreeSet<String>>,
}

impl Archiving {
    fn archive(&self, members: &BTreeSet<String>) -> Result<(Content, String), Error> {
        let entries = members.iter().map(|f| {
            let raw = self.raw_names.get(f);
            match self.contents.get(f) {
                Some((content, executable)) => (f.as_str(), raw, Entry::Memory(content), *executable),
                None => {
                    let path = self.root.join(raw.map_or(Path::new(f), PathBuf::as_path));
                    let executable = is_executable(&path);
                    (f.as_str(), raw, Entry::Disk(path), executable)
                }
            }
        });
        Ok(archive_tree(entries)?)
    }
}

impl Packed {
    /// Puts the environment's registry where the tree was packed with
    /// [`REGISTRY_PLACEHOLDER`] (before the cluster, and so its registry, existed), and
    /// archives again only the artifacts holding a file that names it: the tree is read and
    /// rewritten once per `up`. `objects` and `diffs` keep the placeholder, as `plan` shows
    /// them. Returns false, changing nothing, when the tree was packed with a real registry:
    /// its address could also be the user's own text, so that tree is packed again instead.
    pub fn fill_registry(&mut self, registry: &str) -> Result<bool, Error> {
        if self.registry == registry {
            return Ok(true);
        }
        if self.registry != REGISTRY_PLACEHOLDER {
            return Ok(false);
        }
        let mut filled = BTreeSet::new();
        for (file, (content, _)) in self.archiving.contents.iter_mut() {
            let Ok(text) = std::str::from_utf8(content) else { continue };
            if text.contains(REGISTRY_PLACEHOLDER) {
                *content = text.replace(REGISTRY_PLACEHOLDER, registry).into_bytes();
                filled.insert(file.clone());
            }
        }
        for (artifact, members) in self.artifacts.iter_mut().zip(&self.archiving.members) {
            if members.iter().any(|m| filled.contains(m)) {
                (artifact.content, artifact.digest) = self.archiving.archive(members)?;
            }
        }
        self.registry = registry.to_string();
        Ok(true)
    }

    /// The OCIRepository names of the artifacts and charts.
    pub fn sources(&self) -> BTreeSet<String> {
        self.artifacts.iter().map(|a| a.source.clone()).chain(self.charts.iter().map(|c| c.source.clone())).collect()
    }
}

/// Files read whole into memory are those the overlay and the closure read as text (YAML
/// and kustomization files); every other file is streamed from disk into the archive.
fn read_as_text(relative: &str) -> bool {
    is_yaml(relative) || relative.rsplit('/').next() == Some("Kustomization")
}

type Contents = BTreeMap<String, (Vec<u8>, bool)>;

/// The files with the overlay applied to the Flux objects in them, and each rewrite by file.
fn rewrite_all(originals: &Contents, settings: &Settings) -> Result<(Contents, BTreeMap<String, Rewritten>), Error> {
    let mut contents = Contents::new();
    let mut rewrites = BTreeMap::new();
    for (relative, (content, executable)) in originals {
        let mut content = content.clone();
        if is_yaml(relative)
            && let Ok(text) = std::str::from_utf8(&content)
            && overlay::may_hold_flux_objects(text)
            && let Some(mut rewritten) =
                overlay::rewrite(text, settings).map_err(|source| Error::Overlay { path: relative.clone(), source })?
        {
            content = std::mem::take(&mut rewritten.text).into_bytes();
            rewrites.insert(relative.clone(), rewritten);
        }
        contents.insert(relative.clone(), (content, *executable));
    }
    Ok((contents, rewrites))
}

/// Source names that more than one Kustomization (`namespace/name`) or chart directory
/// would share, such as `devenv-ks-team-a-apps` for `team-a/apps` and `team/a-apps`.
fn clashing_sources(rewrites: &BTreeMap<String, Rewritten>) -> BTreeSet<String> {
    let mut claims: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for rewritten in rewrites.values() {
        for repointed in &rewritten.repointed {
            claims.entry(&repointed.source).or_default().insert(&repointed.kustomization);
        }
        for chart in &rewritten.local_charts {
            claims.entry(&chart.source).or_default().insert(&chart.path);
        }
    }
    claims.into_iter().filter(|(_, claimants)| claimants.len() > 1).map(|(name, _)| name.to_string()).collect()
}

/// Packs the tree with the overlay applied to the Flux objects in it: an artifact for the
/// root Kustomization that builds `flux_path`, then one for each Kustomization re-pointed by
/// the overlay that the root reaches, directly or through others.
pub fn pack(root: &Path, flux_path: &str, root_name: &str, settings: &Settings) -> Result<Packed, Error> {
    let tree = list_tree(root, flux_path)?;
    // Only the files read as text are held in memory; the others are streamed when archived.
    let mut originals = BTreeMap::new();
    for relative in tree.files.iter().filter(|f| read_as_text(f)) {
        let path = tree.path_of(root, relative);
        let size = fs::metadata(&path).map_err(|source| files::Error::Read { path: path.clone(), source })?.len();
        if size > MAX_FILE_SIZE {
            // Not read: if a Kustomization reads it, archiving it says it is too large.
            continue;
        }
        let content = fs::read(&path).map_err(|source| files::Error::Read { path: path.clone(), source })?;
        originals.insert(relative.clone(), (content, is_executable(&path)));
    }
    let files = tree.files.clone();
    // What one file's rewrite needs to know of the others (names that clash, the URLs of
    // HelmRepositories) comes from a first pass; a second one uses it.
    let (mut contents, mut rewrites) = rewrite_all(&originals, settings)?;
    let mut effective = settings.clone();
    let clashing = clashing_sources(&rewrites);
    let helm_repositories = match settings.published_charts.is_empty() {
        true => BTreeMap::new(),
        false => rewrites.values().flat_map(|r| r.helm_repositories.iter().cloned()).collect(),
    };
    if !clashing.is_empty() || !helm_repositories.is_empty() {
        effective = Settings { clashing, helm_repositories, ..settings.clone() };
        (contents, rewrites) = rewrite_all(&originals, &effective)?;
    }
    let raw_bytes = (files.iter())
        .map(|f| match contents.get(f) {
            Some((content, _)) => content.len() as u64,
            None => fs::metadata(tree.path_of(root, f)).map(|m| m.len()).unwrap_or(0),
        })
        .sum();

    let mut visits = Vec::new();
    let mut reached = BTreeSet::new();
    {
        // Kustomization files are not Flux objects, so the rewritten text reads the same.
        let read = |file: &str| contents.get(file).and_then(|(c, _)| String::from_utf8(c.clone()).ok());
        let mut queue = VecDeque::from([overlay::Repointed {
            kustomization: format!("{}/{root_name}", settings.objects_namespace()),
            path: closure::normalise(flux_path),
            source: names::SOURCE_NAME.to_string(),
        }]);
        let mut sources = BTreeSet::new();
        while let Some(next) = queue.pop_front() {
            // A Kustomization defined in two files is packed once; the duplicate is the cluster's to report.
            if !sources.insert(next.source.clone()) {
                continue;
            }
            // A path a parent substitutes (`./apps/${CLUSTER}`) is only known in the cluster:
            // such a Kustomization gets the whole tree.
            let path = if next.path.contains('$') { "" } else { next.path.as_str() };
            let members = closure::files_of(&files, &read, path);
            for file in &members {
                if reached.insert(file.clone())
                    && let Some(rewritten) = rewrites.get(file)
                {
                    queue.extend(rewritten.repointed.iter().cloned());
                }
            }
            visits.push((next, members));
        }
    }
    // Objects `overlay.disable` names by kind are deleted by the Kustomizations that apply
    // them, which only the closures above tell: a last pass adds those patches.
    let root_key = format!("{}/{root_name}", settings.objects_namespace());
    let applying: Vec<(&str, &BTreeSet<String>)> = (visits.iter())
        .filter(|(next, _)| next.kustomization != root_key)
        .map(|(next, members)| (next.kustomization.as_str(), members))
        .collect();
    let original_text = |file: &str| originals.get(file).and_then(|(c, _)| String::from_utf8(c.clone()).ok());
    let deletions = super::disable::deletions(&settings.disable, &applying, &original_text);
    if !deletions.is_empty() {
        effective.deletions = deletions;
        (contents, rewrites) = rewrite_all(&originals, &effective)?;
    }
    let mut archiving =
        Archiving { root: root.to_path_buf(), raw_names: tree.raw_names, contents, members: Vec::new() };
    let mut artifacts = Vec::new();
    for (next, members) in visits {
        let (content, digest) = archiving.archive(&members)?;
        artifacts.push(Artifact {
            source: next.source,
            kustomization: next.kustomization,
            path: next.path,
            digest,
            content,
            files: members.len(),
        });
        archiving.members.push(members);
    }
    let read = |file: &str| archiving.contents.get(file).and_then(|(c, _)| String::from_utf8(c.clone()).ok());

    let mut packed = Packed {
        artifacts,
        raw_bytes,
        changes: Vec::new(),
        diffs: Vec::new(),
        substitution_namespaces: BTreeSet::new(),
        objects: Vec::new(),
        origins: BTreeMap::new(),
        charts: Vec::new(),
        paths: files,
        linked_manifests: tree.linked_manifests,
        texts: Texts::default(),
        registry: settings.registry.clone(),
        archiving: Archiving::default(),
    };
    // Flux objects the overlay left as they are come from their files too.
    for file in reached.iter().filter(|f| is_yaml(f) && !rewrites.contains_key(*f)) {
        if let Some(text) = read(file).filter(|t| overlay::may_hold_flux_objects(t)) {
            let keys = overlay::flux_keys(&text, &settings.flux_namespace);
            packed.origins.extend(keys.into_iter().map(|key| (key, file.clone())));
        }
    }
    for (file, rewritten) in rewrites.into_iter().filter(|(file, _)| reached.contains(file)) {
        packed.changes.extend(rewritten.changes.into_iter().map(|c| (file.clone(), c)));
        packed.diffs.extend(rewritten.diffs.into_iter().map(|d| (file.clone(), d)));
        packed.substitution_namespaces.extend(rewritten.substitution_namespaces);
        packed.objects.extend(rewritten.objects);
        for key in rewritten.keys {
            // Moved into one namespace, objects of the same name from two namespaces would
            // overwrite each other.
            if let Some(first) = packed.origins.get(&key).filter(|_| settings.relocate_to.is_some()) {
                return Err(Error::Collision { object: key, first: first.clone(), second: file.clone() });
            }
            packed.origins.insert(key, file.clone());
        }
        for chart in rewritten.local_charts {
            let chart_error = |source| Error::Chart { file: file.clone(), source: Box::new(source) };
            // Packed once; every HelmRelease asking for it checks its own version constraint.
            if let Some(packed_chart) = packed.charts.iter().find(|c| c.source == chart.source) {
                if let Some(constraint) = &chart.version {
                    let version = &packed_chart.metadata.version;
                    super::charts::check_constraint(&chart.path, version, constraint).map_err(chart_error)?;
                }
                continue;
            }
            let values = if chart.values_files.is_empty() {
                None
            } else {
                Some(
                    super::charts::merged_values(root, &chart.values_files, chart.ignore_missing_values_files)
                        .map_err(chart_error)?,
                )
            };
            let (metadata, bytes) =
                super::charts::package(root, &chart.path, values.as_deref()).map_err(chart_error)?;
            if let Some(constraint) = &chart.version {
                super::charts::check_constraint(&chart.path, &metadata.version, constraint).map_err(chart_error)?;
            }
            packed.charts.push(PackedChart { source: chart.source, path: chart.path, metadata, bytes });
        }
    }
    packed.archiving = archiving;
    packed.texts = (originals.into_iter())
        .filter_map(|(file, (content, _))| Some((file, String::from_utf8(content).ok()?)))
        .collect();
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    use crate::flux::artifact::{SPOOL_IN_MEMORY, digest};
    use crate::flux::files::list_files;
    use crate::flux::files::tests::write_tree;
    use crate::flux::overlay::tests::settings;

    fn tree() -> tempfile::TempDir {
        write_tree(&[
            (".gitignore", "secrets.env\n/build/\n"),
            ("secrets.env", "TOKEN=1\n"),
            ("build/out.yaml", "x: 1\n"),
            (".git/HEAD", "ref: refs/heads/main\n"),
            (".devenv/substitutes/rds-mariadb.yaml", "image: x\n"),
            ("clusters/local/flux-system/gotk-sync.yaml", "kind: GitRepository\n"),
            (
                "clusters/local/apps.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  path: ./apps\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
            ),
            ("apps/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\n"),
        ])
    }

    /// Settings that re-point `https://charts.example.org` at the registry and publish the
    /// repository's `charts/greeter` there.
    fn greeter_published(registry: &str) -> Settings {
        let mut settings = settings();
        settings.registry = registry.into();
        settings.source_urls = vec![overlay::SourceUrl {
            url: "https://charts.example.org".into(),
            to: "oci://{{ registry }}/charts".into(),
            insecure: true,
            drop_verify: false,
        }];
        settings.published_charts = vec![overlay::PublishedChart {
            url: format!("oci://{registry}/charts"),
            name: "greeter".into(),
            path: "charts/greeter".into(),
        }];
        settings
    }

    #[test]
    fn every_release_of_a_published_chart_has_its_version_constraint_checked() {
        let release = |name: &str, version: &str| {
            format!(
                "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n  namespace: web\nspec:\n  chart:\n    spec:\n      chart: greeter\n      version: \"{version}\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n        namespace: web\n"
            )
        };
        let repository = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: web\nspec:\n  url: https://charts.example.org\n";
        let (first, second) = (release("first", "0.1.x"), release("second", "0.2.x"));
        let dir = write_tree(&[
            ("charts/greeter/Chart.yaml", "apiVersion: v2\nname: greeter\nversion: 0.1.0\n"),
            ("charts/greeter/templates/deployment.yaml", "kind: Deployment\n"),
            ("clusters/local/repository.yaml", repository),
            ("clusters/local/a-first.yaml", &first),
            ("clusters/local/b-second.yaml", &second),
        ]);
        let settings = greeter_published("127.0.0.1:5000");
        let error = pack(dir.path(), "clusters/local", "devenv-root", &settings).unwrap_err();
        let source = std::error::Error::source(&error).map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(
            error.to_string(),
            "a HelmRelease in `clusters/local/b-second.yaml` takes its chart from the repository"
        );
        assert!(source.contains("which `0.2.x` (spec.chart.spec.version) does not allow"), "{source}");
        std::fs::write(dir.path().join("clusters/local/b-second.yaml"), release("second", "~0.1")).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings).unwrap();
        assert_eq!(packed.charts.len(), 1, "one chart for both releases");
    }

    #[test]
    fn filling_the_registry_in_gives_the_bytes_packing_with_it_gives() {
        let release = "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: greeter\n  namespace: web\nspec:\n  chart:\n    spec:\n      chart: greeter\n      version: \"0.1.x\"\n      sourceRef:\n        kind: HelmRepository\n        name: charts\n        namespace: web\n";
        let repository = "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: charts\n  namespace: web\nspec:\n  url: https://charts.example.org\n";
        let dir = write_tree(&[
            ("charts/greeter/Chart.yaml", "apiVersion: v2\nname: greeter\nversion: 0.1.0\n"),
            ("charts/greeter/templates/deployment.yaml", "kind: Deployment\n"),
            ("clusters/local/repository.yaml", repository),
            ("clusters/local/release.yaml", release),
            (
                "clusters/local/apps.yaml",
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: apps\n  namespace: flux-system\nspec:\n  path: ./apps\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n",
            ),
            ("apps/deployment.yaml", "apiVersion: apps/v1\nkind: Deployment\n"),
        ]);
        let with_registry = |registry: &str| {
            let settings = greeter_published(registry);
            pack(dir.path(), "clusters/local", "devenv-root", &settings).unwrap()
        };
        let direct = with_registry("127.0.0.1:5000");
        let mut filled = with_registry(REGISTRY_PLACEHOLDER);
        assert_ne!(digests(&filled)[0], digests(&direct)[0], "the root's files name the registry");
        assert_eq!(digests(&filled)[1], digests(&direct)[1], "the app's files do not");
        assert!(filled.fill_registry("127.0.0.1:5000").unwrap());
        assert_eq!(digests(&filled), digests(&direct));
        assert_eq!(filled.registry, "127.0.0.1:5000");
        // A real address is never replaced as text: the caller packs again.
        let mut packed = with_registry("127.0.0.1:5000");
        assert!(!packed.fill_registry("127.0.0.1:5001").unwrap());
        assert_eq!(digests(&packed), digests(&direct));
    }

    #[test]
    fn flux_objects_the_overlay_leaves_alone_keep_their_file() {
        let dir = write_tree(&[(
            "clusters/local/sources.yaml",
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmRepository\nmetadata:\n  name: legacy\n  namespace: platform\nspec:\n  url: https://charts.example.org\n",
        )]);
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert!(packed.changes.is_empty(), "{:?}", packed.changes);
        assert_eq!(packed.origins["HelmRepository/platform/legacy"], "clusters/local/sources.yaml");
    }

    #[test]
    fn lists_what_flux_needs_and_nothing_else() {
        let dir = tree();
        let files = list_files(dir.path(), "clusters/local").unwrap();
        assert_eq!(files, [".gitignore", "apps/deployment.yaml", "clusters/local/apps.yaml"]);
        let files = list_files(dir.path(), "./clusters/local/").unwrap();
        assert!(!files.iter().any(|f| f.contains("flux-system")));
    }

    #[test]
    fn the_checks_read_the_text_that_was_packed_not_the_disk_again() {
        let dir = tree();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        std::fs::write(dir.path().join("apps/deployment.yaml"), "edited: after packing\n").unwrap();
        assert_eq!(packed.texts.get("apps/deployment.yaml"), Some("apiVersion: apps/v1\nkind: Deployment\n"));
        // The user's text, before the overlay re-points the Kustomization at devenv's source.
        assert!(packed.texts.get("clusters/local/apps.yaml").unwrap().contains("name: flux-system"));
        assert_eq!(packed.texts.get("secrets.env"), None, "an ignored file is not in the tree");
    }

    fn digests(packed: &Packed) -> Vec<(String, String)> {
        packed.artifacts.iter().map(|a| (a.source.clone(), a.digest.clone())).collect()
    }

    fn entries(bytes: &[u8]) -> Vec<(String, String)> {
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
        let mut out = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            assert_eq!(entry.header().mtime().unwrap(), 0);
            assert_eq!(entry.header().uid().unwrap(), 0);
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut text = String::new();
            io::Read::read_to_string(&mut entry, &mut text).unwrap();
            out.push((name, text));
        }
        out
    }

    #[test]
    fn the_same_tree_gives_the_same_digests_whatever_the_mtimes() {
        let dir = tree();
        let first = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        let deployment = dir.path().join("apps/deployment.yaml");
        let file = fs::File::options().write(true).open(&deployment).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).unwrap();
        let second = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(digests(&first), digests(&second));
        assert_eq!(first.artifacts[1].content.to_vec().unwrap(), second.artifacts[1].content.to_vec().unwrap());

        fs::write(&deployment, "apiVersion: apps/v1\nkind: Deployment # edited\n").unwrap();
        let third = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(first.artifacts[0].digest, third.artifacts[0].digest, "the root does not read the edited file");
        assert_ne!(first.artifacts[1].digest, third.artifacts[1].digest, "an uncommitted edit is included");
    }

    #[test]
    fn each_kustomization_gets_the_files_it_reads_with_flux_objects_rewritten() {
        let dir = tree();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(packed.paths.len(), 3);
        let artifacts: Vec<(&str, &str, &str)> =
            packed.artifacts.iter().map(|a| (a.source.as_str(), a.kustomization.as_str(), a.path.as_str())).collect();
        assert_eq!(
            artifacts,
            [
                ("devenv-source", "flux-system/devenv-root", "clusters/local"),
                ("devenv-ks-apps", "flux-system/apps", "apps")
            ]
        );
        let changed: Vec<&str> = packed.changes.iter().map(|(file, _)| file.as_str()).collect();
        assert_eq!(changed, ["clusters/local/apps.yaml", "clusters/local/apps.yaml"], "sourceRef and patches");
        assert_eq!(packed.origins["Kustomization/flux-system/apps"], "clusters/local/apps.yaml");

        let root = entries(&packed.artifacts[0].content.to_vec().unwrap());
        assert_eq!(root.len(), 1);
        assert_eq!(root[0].0, "clusters/local/apps.yaml");
        assert!(root[0].1.contains("name: devenv-ks-apps"), "{}", root[0].1);
        let apps = entries(&packed.artifacts[1].content.to_vec().unwrap());
        assert_eq!(apps.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(), ["apps/deployment.yaml"]);
        // The file on disk is never edited.
        assert!(!fs::read_to_string(dir.path().join("clusters/local/apps.yaml")).unwrap().contains("devenv-"));
    }

    #[test]
    fn kustomizations_the_root_does_not_reach_get_no_artifact() {
        let dir = tree();
        let production = fs::read_to_string(dir.path().join("clusters/local/apps.yaml")).unwrap();
        let production = production.replace("name: apps", "name: apps-production").replace("./apps", "./other");
        fs::create_dir_all(dir.path().join("clusters/production")).unwrap();
        fs::write(dir.path().join("clusters/production/apps.yaml"), production).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(packed.artifacts.len(), 2);
        assert!(packed.changes.iter().all(|(file, _)| file.starts_with("clusters/local/")), "{:?}", packed.changes);
    }

    #[test]
    fn a_manifest_that_is_a_symbolic_link_is_left_out_and_named() {
        let dir = tree();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.yaml"), "apiVersion: v1\nkind: Secret\n").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.yaml"), dir.path().join("apps/secret.yaml")).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(packed.linked_manifests, ["apps/secret.yaml"]);
        assert!(!packed.paths.contains(&"apps/secret.yaml".to_string()), "{:?}", packed.paths);
    }

    #[test]
    fn objects_that_would_meet_in_the_environment_namespace_are_refused() {
        let dir = tree();
        let other = fs::read_to_string(dir.path().join("clusters/local/apps.yaml")).unwrap();
        fs::write(
            dir.path().join("clusters/local/team-a.yaml"),
            other.replace("namespace: flux-system", "namespace: team-a"),
        )
        .unwrap();
        assert!(pack(dir.path(), "clusters/local", "devenv-root", &settings()).is_ok(), "apart, they are two");
        let shared = Settings { relocate_to: Some("devenv-alice".into()), ..settings() };
        let error = pack(dir.path(), "clusters/local", "devenv-root", &shared).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`clusters/local/apps.yaml` and `clusters/local/team-a.yaml` both define Kustomization/devenv-alice/apps once the environment's Flux objects share its namespace"
        );
    }

    #[test]
    fn kustomizations_whose_readable_source_names_clash_get_one_each() {
        let dir = tree();
        let child = |namespace: &str, name: &str, path: &str| {
            format!(
                "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  path: {path}\n  sourceRef:\n    kind: GitRepository\n    name: flux-system\n    namespace: flux-system\n"
            )
        };
        // Both would be `devenv-ks-team-a-apps`.
        fs::write(dir.path().join("clusters/local/team-a.yaml"), child("team-a", "apps", "./apps")).unwrap();
        fs::create_dir_all(dir.path().join("other")).unwrap();
        fs::write(dir.path().join("other/service.yaml"), "apiVersion: v1\nkind: Service\n").unwrap();
        fs::write(dir.path().join("clusters/local/team.yaml"), child("team", "a-apps", "./other")).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        let sources: BTreeMap<&str, (&str, &str)> = (packed.artifacts.iter())
            .map(|a| (a.kustomization.as_str(), (a.source.as_str(), a.path.as_str())))
            .collect();
        let (team_a, team) = (sources["team-a/apps"], sources["team/a-apps"]);
        assert_ne!(team_a.0, team.0, "{sources:?}");
        assert!(team_a.0.starts_with("devenv-ks-team-a-apps-") && team.0.starts_with("devenv-ks-team-a-apps-"));
        assert_eq!((team_a.1, team.1), ("apps", "other"));
        assert_eq!(sources["flux-system/apps"].0, "devenv-ks-apps", "a name nothing else claims stays as it is");
        let root = entries(&packed.artifacts[0].content.to_vec().unwrap());
        let team_file = &root.iter().find(|(name, _)| name == "clusters/local/team.yaml").unwrap().1;
        assert!(team_file.contains(&format!("name: {}", team.0)), "{team_file}");
    }

    #[test]
    fn a_file_name_that_is_not_utf8_is_packed_byte_for_byte_and_shown_escaped() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tree();
        let raw = std::ffi::OsStr::from_bytes(b"caf\xe9.txt");
        fs::write(dir.path().join("apps").join(raw), "menu\n").unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert!(packed.paths.contains(&"apps/caf\\xE9.txt".to_string()), "{:?}", packed.paths);
        let bytes = packed.artifacts[1].content.to_vec().unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let names: Vec<Vec<u8>> = archive.entries().unwrap().map(|e| e.unwrap().path_bytes().into_owned()).collect();
        assert!(names.contains(&b"apps/caf\xe9.txt".to_vec()), "{names:?}");
        // Packing again gives the same bytes.
        let again = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(again.artifacts[1].digest, packed.artifacts[1].digest);
    }

    #[test]
    fn two_names_that_escape_alike_are_refused_with_both() {
        use std::os::unix::ffi::OsStrExt;
        let dir = tree();
        fs::write(dir.path().join("apps").join(std::ffi::OsStr::from_bytes(b"caf\xe9")), "a").unwrap();
        fs::write(dir.path().join("apps/caf\\xE9"), "b").unwrap();
        let error = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap_err();
        assert!(matches!(error, Error::Files(files::Error::NameClash { .. })), "{error}");
        assert!(error.to_string().contains("`apps/caf\\xE9`"), "{error}");
    }

    #[test]
    fn a_file_over_the_limit_is_named_when_a_kustomization_reads_it_and_ignored_otherwise() {
        let dir = tree();
        // Sparse: nothing is written, and nothing is read before the size is checked.
        let big = fs::File::create(dir.path().join("dump.sql")).unwrap();
        big.set_len(MAX_FILE_SIZE + 1).unwrap();
        let huge_yaml = fs::File::create(dir.path().join("data.yaml")).unwrap();
        huge_yaml.set_len(MAX_FILE_SIZE + 1).unwrap();
        pack(dir.path(), "clusters/local", "devenv-root", &settings()).expect("no Kustomization reads them");
        fs::rename(dir.path().join("dump.sql"), dir.path().join("apps/dump.sql")).unwrap();
        let error = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "`apps/dump.sql` is 100.0 MiB ({} bytes), more than the 100.0 MiB a file may have to be packed",
                MAX_FILE_SIZE + 1
            )
        );
        fs::remove_file(dir.path().join("apps/dump.sql")).unwrap();
        fs::rename(dir.path().join("data.yaml"), dir.path().join("apps/data.yaml")).unwrap();
        let error = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap_err();
        assert!(
            matches!(error, Error::Files(files::Error::TooLarge { ref path, .. }) if path == "apps/data.yaml"),
            "{error}"
        );
    }

    #[test]
    fn a_large_artifact_spools_to_a_file_with_the_same_digest() {
        let dir = tree();
        // Incompressible, so the archive is larger than what stays in memory.
        let mut noise = Vec::with_capacity(SPOOL_IN_MEMORY + 4096);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        while noise.len() < SPOOL_IN_MEMORY + 4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            noise.extend_from_slice(&x.to_le_bytes());
        }
        fs::write(dir.path().join("apps/noise.bin"), &noise).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        let apps = &packed.artifacts[1];
        assert!(!apps.content.in_memory(), "{} bytes", apps.content.len());
        let bytes = apps.content.to_vec().unwrap();
        assert_eq!(digest(&bytes), apps.digest);
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        let mut found = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.path().unwrap().ends_with("noise.bin") {
                io::Read::read_to_end(&mut entry, &mut found).unwrap();
            }
        }
        assert_eq!(found, noise);
        assert!(packed.artifacts[0].content.in_memory(), "small artifacts stay in memory");
    }

    #[test]
    fn a_path_with_a_variable_gets_the_whole_tree() {
        let dir = tree();
        let apps = dir.path().join("clusters/local/apps.yaml");
        let text = fs::read_to_string(&apps).unwrap().replace("path: ./apps", "path: ./apps/${CLUSTER}");
        fs::write(&apps, text).unwrap();
        let packed = pack(dir.path(), "clusters/local", "devenv-root", &settings()).unwrap();
        assert_eq!(packed.artifacts[1].files, packed.paths.len(), "Flux substitutes the path; devenv cannot know it");
    }
}
