//! `devenv version`: the build and the versions it expects (the same as `--version`).

use super::Context;
use crate::{ui, version};

pub fn run(ctx: &Context) {
    if ctx.json() {
        ui::print_result(&version::info());
    } else {
        crate::outln!("devenv {}", version::long());
    }
}
