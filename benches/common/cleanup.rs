//! `devenv down --purge` of a bench's environment when dropped, also while a failed assertion
//! unwinds, so no cluster, container or volume outlives the run.

use std::path::Path;
use std::process::{Command, Stdio};

pub struct Cleanup<'a> {
    pub repo: &'a Path,
    pub state: &'a Path,
    pub env: &'a str,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = Command::new(env!("CARGO_BIN_EXE_devenv"))
            .args(["down", "--purge", "--env", self.env])
            .current_dir(self.repo)
            .env("DEVENV_STATE_DIR", self.state)
            .stdout(Stdio::null())
            .status();
    }
}
