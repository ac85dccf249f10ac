//! `devenv preview …`: per-pull-request environments in a shared cluster.

use serde::Serialize;
use serde_json::Value;

use super::Context;
use crate::cli::PreviewRbacArgs;
use crate::preview::rbac;
use crate::ui;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Rbac {
    /// `user devenv-ci`, `group …`, `service account NS/NAME`.
    subject: String,
    objects: Vec<Value>,
}

/// Prints what the CI identity needs; needs no repository and no cluster.
pub fn rbac(ctx: &Context, args: &PreviewRbacArgs) {
    let subject = args.subject();
    let objects = rbac::objects(&subject);
    if ctx.json() {
        ui::print_result(&Rbac { subject: subject.describe(), objects });
    } else {
        crate::out!("{}", rbac::to_yaml(&subject, &objects));
    }
}
