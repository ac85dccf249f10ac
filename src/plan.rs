//! What `up` will do: a pure function of the configuration, the desired containers and what
//! exists. `devenv plan` prints it; `up` carries it out.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::Config;
use crate::config::profile::Provider;
use crate::ports::Choice;
use crate::substitutes::{Action, Desired, Observed};

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub env: String,
    pub profile: String,
    pub cluster: ClusterStep,
    pub services: Vec<ServiceStep>,
    /// Containers of the environment whose service left devenv.yaml; `up` removes them.
    pub orphans: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStep {
    pub provider: Provider,
    pub description: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStep {
    pub service: String,
    pub kind: String,
    pub container: String,
    pub image: String,
    pub action: Action,
    pub reason: String,
    pub port: u16,
    /// Set when the port is not the remembered one.
    pub port_note: Option<String>,
    pub volume: Option<VolumeStep>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStep {
    pub name: String,
    /// True when the volume exists and its data is kept.
    pub exists: bool,
}

pub fn compute(
    config: &Config,
    desired: &[Desired],
    observed: &BTreeMap<String, Observed>,
    orphans: &[String],
) -> Plan {
    let services = desired
        .iter()
        .map(|d| {
            let seen = observed.get(&d.service.name).cloned().unwrap_or_default();
            let (action, reason) = decide(d, &seen);
            let main = d.ports[&d.service.substitute.main_port];
            ServiceStep {
                service: d.service.name.clone(),
                kind: d.service.kind.clone(),
                container: d.spec.name.clone(),
                image: d.spec.image.clone(),
                action,
                reason,
                port: main.port(),
                port_note: port_note(main),
                volume: d.spec.volume.as_ref().map(|(name, _)| VolumeStep {
                    name: name.clone(),
                    exists: seen.volume_exists,
                }),
            }
        })
        .collect();
    Plan {
        env: config.env.clone(),
        profile: config.profile_name.clone(),
        cluster: ClusterStep {
            provider: config.profile.cluster.provider,
            description: config.profile.description.clone(),
        },
        services,
        orphans: orphans.to_vec(),
    }
}

/// The action for one container and why.
fn decide(desired: &Desired, observed: &Observed) -> (Action, String) {
    let Some(container) = &observed.container else {
        return (Action::Create, "no container yet".to_string());
    };
    let wanted_hash = desired.spec.labels.get(crate::naming::LABEL_SPEC_HASH);
    if container.labels.get(crate::naming::LABEL_SPEC_HASH) != wanted_hash {
        let reason = if container.image != desired.spec.image {
            format!(
                "image changes from {} to {}",
                container.image, desired.spec.image
            )
        } else if container.ports != desired.spec.ports {
            "published ports change".to_string()
        } else {
            "settings changed".to_string()
        };
        return (Action::Recreate, reason);
    }
    if !container.running {
        return (Action::Start, format!("container is {}", container.state));
    }
    (Action::Keep, "up to date".to_string())
}

fn port_note(choice: Choice) -> Option<String> {
    match choice {
        Choice::Moved { from, to } => Some(format!(
            "port {from} is taken by another program; moving to {to}"
        )),
        Choice::New(port) => Some(format!("new port {port}")),
        Choice::Pinned(_) | Choice::Kept(_) => None,
    }
}

/// The plan as text for people.
pub fn render(plan: &Plan) -> String {
    let mut out = format!(
        "Plan for environment `{}` (profile `{}`)\n",
        plan.env, plan.profile
    );
    out.push_str(&format!(
        "  cluster: {}\n",
        match plan.cluster.provider {
            Provider::None => "none (substitutes only)".to_string(),
            other => format!("{} — {}", other.as_str(), plan.cluster.description),
        }
    ));
    if plan.services.is_empty() {
        out.push_str("  no services\n");
    }
    for step in &plan.services {
        let verb = match step.action {
            Action::Create => "create",
            Action::Recreate => "recreate",
            Action::Start => "start",
            Action::Keep => "keep",
        };
        out.push_str(&format!(
            "  {verb:<8} {} ({}, {}) on 127.0.0.1:{}: {}\n",
            step.container, step.kind, step.image, step.port, step.reason
        ));
        if let Some(note) = &step.port_note {
            out.push_str(&format!("           {note}\n"));
        }
        if let Some(volume) = &step.volume {
            let what = if volume.exists {
                "keeps its data in"
            } else {
                "creates volume"
            };
            out.push_str(&format!("           {what} {}\n", volume.name));
        }
    }
    for orphan in &plan.orphans {
        out.push_str(&format!(
            "  remove   {orphan}: its service is no longer in devenv.yaml (volume kept)\n"
        ));
    }
    out
}
