//! The working tree's files as devenv packs them: listed (ignored files, `.git`, `.devenv/`
//! and `flux bootstrap`'s own directory left out), named (non-UTF-8 bytes escaped), resolved
//! inside the repository, and limited in size. Reads files only.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Reading the working tree, or writing it into an archive.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot walk the repository at `{}`", root.display())]
    Walk {
        root: PathBuf,
        #[source]
        source: ignore::Error,
    },
    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write the artifact")]
    Write(#[source] io::Error),
    #[error("`{path}` is {} ({size} bytes), more than the {} a file may have to be packed", human_size(*size), human_size(MAX_FILE_SIZE))]
    TooLarge { path: String, size: u64 },
    #[error("`{first}` and `{second}` are two files whose names are not UTF-8 and read the same once escaped")]
    NameClash { first: String, second: String },
}

/// The largest file devenv packs: 100 MiB, the limit Flux's own tar library
/// (`fluxcd/pkg/tar`, `DefaultMaxUntarSize`) puts on what it unpacks unless a controller lifts
/// it. A file that size in a GitOps repository is a build output or a dump that was never
/// meant for the cluster; a file past it that a Kustomization reads is an error naming it.
pub const MAX_FILE_SIZE: u64 = 100 << 20;

/// `1.5 MiB`, `200.0 MB`-style sizes for messages (binary units).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A path relative to the repository as text: its UTF-8 as it is, each byte that is not
/// UTF-8 as `\xNN` (`apps/caf\xE9.yaml`), so a name is always shown and never lost.
pub fn escape_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut text = String::new();
    for chunk in path.as_os_str().as_bytes().utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02X}"));
        }
    }
    text
}

/// Files of the working tree that go into the artifact, as sorted `/`-separated paths.
pub fn list_files(root: &Path, flux_path: &str) -> Result<Vec<String>, Error> {
    Ok(list_tree(root, flux_path)?.files)
}

/// The files of the working tree that are packed, and the YAML files left out because they
/// are symbolic links: an artifact carries files only, and a link could reach outside the
/// repository.
#[derive(Debug, Default)]
pub struct Tree {
    pub files: Vec<String>,
    pub linked_manifests: Vec<String>,
    /// Files whose names are not UTF-8: the escaped name in `files` ([`escape_path`]) and
    /// the real relative path, which the archive carries byte for byte.
    pub raw_names: BTreeMap<String, PathBuf>,
}

impl Tree {
    /// Where the file listed as `relative` is, under `root`.
    pub fn path_of(&self, root: &Path, relative: &str) -> PathBuf {
        match self.raw_names.get(relative) {
            Some(raw) => root.join(raw),
            None => root.join(relative),
        }
    }
}

/// The text files of the tree as `pack` read them, before the overlay: what the substitution
/// contract and the checks read, so they judge the very bytes that were packed (not a second
/// read of a tree that may have changed since) and still point at the user's own lines.
#[derive(Debug, Clone, Default)]
pub struct Texts(BTreeMap<String, String>);

impl Texts {
    /// The text of `file` (relative to the repository), if the tree has it as text.
    pub fn get(&self, file: &str) -> Option<&str> {
        self.0.get(file).map(String::as_str)
    }

    /// [`get`](Self::get) as an owned string, the shape `closure::files_of` reads with.
    pub fn read(&self, file: &str) -> Option<String> {
        self.get(file).map(str::to_string)
    }

    /// Every file of `root` read as text, as a test sets a tree up on disk.
    #[cfg(test)]
    pub fn of_dir(root: &Path) -> Self {
        let walk = ignore::WalkBuilder::new(root).hidden(false).git_ignore(false).build();
        let files = walk.filter_map(Result::ok).filter(|e| e.file_type().is_some_and(|t| t.is_file()));
        Texts(
            files
                .filter_map(|entry| {
                    let relative = entry.path().strip_prefix(root).ok()?.to_str()?.to_string();
                    Some((relative, fs::read_to_string(entry.path()).ok()?))
                })
                .collect(),
        )
    }
}

impl FromIterator<(String, String)> for Texts {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(files: I) -> Self {
        Texts(files.into_iter().collect())
    }
}

/// Where `relative` (a path devenv.yaml or a Flux object names) leads once `..` and symbolic
/// links are followed, if that is inside `root`; otherwise why not. A path that does not
/// exist is left for its reader to report.
pub fn resolve_inside(root: &Path, relative: &str) -> Result<std::path::PathBuf, String> {
    let joined = root.join(relative);
    let root = root.canonicalize().map_err(|e| format!("the repository cannot be resolved ({e})"))?;
    match joined.canonicalize() {
        Ok(real) if real.starts_with(&root) => Ok(real),
        Ok(real) => Err(format!("it leads to `{}`, outside the repository", real.display())),
        Err(_) if std::path::Path::new(relative).components().any(|c| c == std::path::Component::ParentDir) => {
            Err("it leaves the repository (`..`)".to_string())
        }
        Err(_) => Ok(joined),
    }
}

/// Lists the working tree (see `list_files`).
pub fn list_tree(root: &Path, flux_path: &str) -> Result<Tree, Error> {
    let bootstrap_dir = format!("{}/flux-system", flux_path.trim_start_matches("./").trim_end_matches('/'));
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .require_git(false)
        .parents(false)
        .follow_links(false)
        .filter_entry(|entry| !matches!(entry.file_name().to_str(), Some(".git")))
        .build();
    let mut tree = Tree::default();
    for entry in walker {
        let entry = entry.map_err(|source| Error::Walk { root: root.to_path_buf(), source })?;
        let is_link = entry.file_type().is_some_and(|t| t.is_symlink());
        if !entry.file_type().is_some_and(|t| t.is_file()) && !is_link {
            continue;
        }
        let raw = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let relative = escape_path(raw);
        let is_raw = raw.to_str().is_none();
        if is_link {
            if is_yaml(&relative) && !relative.starts_with(".devenv/") {
                tree.linked_manifests.push(relative);
            }
            continue;
        }
        // `flux bootstrap`'s own manifests would reinstall Flux and add a rival root.
        if relative.starts_with(".devenv/") || relative.starts_with(&format!("{bootstrap_dir}/")) {
            continue;
        }
        if is_raw {
            // Two names that escape alike (a real `\xE9` in one) would be one file to Flux.
            if tree.raw_names.contains_key(&relative) {
                return Err(Error::NameClash { first: relative.clone(), second: escape_path(raw) });
            }
            tree.raw_names.insert(relative.clone(), raw.to_path_buf());
        }
        tree.files.push(relative);
    }
    if let Some(clash) = tree.raw_names.keys().find(|name| tree.files.iter().filter(|f| f == name).count() > 1) {
        return Err(Error::NameClash { first: clash.clone(), second: clash.clone() });
    }
    tree.files.sort();
    tree.linked_manifests.sort();
    Ok(tree)
}

pub fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path.ends_with(".yml")
}

pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A temporary directory holding `(path, text)` files, parents created.
    pub(crate) fn write_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let path = dir.path().join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn sizes_read_in_binary_units() {
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(200_000_000), "190.7 MiB");
    }
}
