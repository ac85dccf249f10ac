//! Cluster providers: where an environment's Kubernetes comes from.

use crate::config::profile::Provider;

/// Providers this version of devenv can run.
pub const AVAILABLE: &[&str] = &["none"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "profile `{profile}` uses the `{provider}` cluster provider, which this version of devenv cannot run"
    )]
    NotAvailable {
        profile: String,
        provider: &'static str,
    },
}

/// Fails before any side effect when the profile's provider cannot run here.
pub fn check_available(profile: &str, provider: Provider) -> Result<(), Error> {
    if AVAILABLE.contains(&provider.as_str()) {
        Ok(())
    } else {
        Err(Error::NotAvailable {
            profile: profile.to_string(),
            provider: provider.as_str(),
        })
    }
}
