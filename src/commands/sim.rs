//! `devenv sim build`: the sim cluster's binaries, built once into the cache.

use super::Context;
use crate::errors::Error;
use crate::providers::{self, sim};
use crate::ui;

pub async fn build(ctx: &Context) -> Result<(), Error> {
    let reporter = ctx.reporter();
    let dir = sim::build(reporter.as_ref()).await.map_err(providers::Error::from)?;
    if ctx.json() {
        ui::print_result(&serde_json::json!({"dir": dir}));
    } else {
        crate::outln!("The sim cluster's binaries are in {}.", dir.display());
    }
    Ok(())
}
