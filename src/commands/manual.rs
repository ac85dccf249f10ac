//! `devenv completions SHELL` and `devenv man`. The completion script asks devenv for the
//! candidates on every TAB (`completion.rs`), so it offers what `--help` documents plus the
//! repository's profiles and services; the pages are generated from the command line's own
//! definition, so they say what `--help` says.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Context, Error as CommandError};
use crate::cli::{self, CompletionsArgs, ManArgs};
use crate::ui;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Completions {
    shell: String,
    script: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Manual {
    /// `--dir`, when given.
    dir: Option<PathBuf>,
    /// The pages written there.
    files: Vec<String>,
    /// The page of `devenv` itself, without `--dir`.
    page: Option<String>,
}

pub fn completions(ctx: &Context, args: &CompletionsArgs) {
    let script = crate::completion::script(args.shell);
    if ctx.json() {
        ui::print_result(&Completions { shell: args.shell.to_string(), script });
    } else {
        crate::out!("{script}");
    }
}

pub fn man(ctx: &Context, args: &ManArgs) -> Result<(), CommandError> {
    let result = match &args.dir {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli::command()).render(&mut page).expect("writing to memory succeeds");
            Manual { dir: None, files: Vec::new(), page: Some(String::from_utf8_lossy(&page).into_owned()) }
        }
        Some(dir) => {
            let files = write_pages(dir).map_err(|(path, source)| CommandError::Write { path, source })?;
            Manual { dir: Some(dir.clone()), files, page: None }
        }
    };
    if ctx.json() {
        ui::print_result(&result);
    } else if let Some(dir) = &result.dir {
        crate::outln!("Wrote {} manual pages to {}: {}", result.files.len(), dir.display(), result.files.join(", "));
    } else if let Some(page) = &result.page {
        crate::out!("{page}");
    }
    Ok(())
}

/// `devenv.1` and a page per command (`devenv-up.1`, `devenv-sim-build.1`, …) in `dir`.
fn write_pages(dir: &Path) -> Result<Vec<String>, (PathBuf, std::io::Error)> {
    fn write(command: clap::Command, dir: &Path, files: &mut Vec<String>) -> Result<(), (PathBuf, std::io::Error)> {
        for sub in command.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
            write(sub, dir, files)?;
        }
        let man = clap_mangen::Man::new(command);
        let path = dir.join(man.get_filename());
        man.generate_to(dir).map_err(|e| (path.clone(), e))?;
        files.push(man.get_filename());
        Ok(())
    }
    std::fs::create_dir_all(dir).map_err(|e| (dir.to_path_buf(), e))?;
    let mut command = cli::command().disable_help_subcommand(true);
    command.build();
    let mut files = Vec::new();
    write(command, dir, &mut files)?;
    files.sort();
    Ok(files)
}
