//! Compiles the repository's `profiles/` and `substitutes/` into the binary as defaults, and
//! names the commit the binary is built from (`DEVENV_COMMIT`: `git rev-parse --short HEAD`;
//! in a package cargo made, the commit it recorded; otherwise, as in a source archive, `unknown`).

use std::env;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

fn main() {
    let root = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    commit(Path::new(&root));
    let mut code = String::new();
    for (constant, dir) in [("PROFILES", "profiles"), ("SUBSTITUTES", "substitutes")] {
        let dir = Path::new(&root).join(dir);
        println!("cargo:rerun-if-changed={}", dir.display());
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
            .map(|entry| entry.expect("directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
            .collect();
        files.sort();
        writeln!(code, "pub const {constant}: &[(&str, &str)] = &[").unwrap();
        for path in files {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            writeln!(code, "    ({name:?}, include_str!({:?})),", path.display().to_string()).unwrap();
        }
        writeln!(code, "];").unwrap();
    }
    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("builtin.rs");
    fs::write(out, code).expect("write builtin.rs");
}

/// Sets `DEVENV_COMMIT`, and reruns when HEAD moves (a commit, a checkout).
fn commit(root: &Path) {
    // `cargo package` records the commit in `.cargo_vcs_info.json` (`"sha1": "…"`); such a
    // source may sit inside another repository, whose HEAD is not this one.
    if let Ok(info) = fs::read_to_string(root.join(".cargo_vcs_info.json"))
        && let Some(sha) = info.split("\"sha1\"").nth(1).and_then(|rest| rest.split('"').nth(1))
    {
        println!("cargo:rustc-env=DEVENV_COMMIT={}", &sha[..sha.len().min(7)]);
        return;
    }
    let git = |args: &[&str]| {
        let output = Command::new("git").arg("-C").arg(root).args(args).output().ok().filter(|o| o.status.success())?;
        Some(String::from_utf8(output.stdout).ok()?.trim().to_string()).filter(|s| !s.is_empty())
    };
    // Only this crate's own checkout: an archive unpacked inside another repository is not it.
    let toplevel = git(&["rev-parse", "--show-toplevel"]).and_then(|top| fs::canonicalize(top).ok());
    let own = toplevel.is_some() && toplevel == fs::canonicalize(root).ok();
    let commit = if own { git(&["rev-parse", "--short", "HEAD"]) } else { None };
    println!("cargo:rustc-env=DEVENV_COMMIT={}", commit.as_deref().unwrap_or("unknown"));
    if commit.is_none() {
        return;
    }
    // HEAD names the branch; the branch's ref (loose or packed) names the commit.
    // A path that does not exist would rerun the script on every build.
    let branch = git(&["symbolic-ref", "-q", "HEAD"]);
    let watched = ["HEAD", "packed-refs"].into_iter().chain(branch.as_deref());
    for path in watched.filter_map(|name| git(&["rev-parse", "--path-format=absolute", "--git-path", name])) {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
}
