//! Cluster providers: where an environment's Kubernetes comes from.

pub mod sim;

use crate::config::profile::Provider;

/// Providers this version of devenv can run.
pub const AVAILABLE: &[&str] = &["none", "sim"];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("profile `{profile}` uses the `{provider}` cluster provider, which this version of devenv cannot run")]
    NotAvailable { profile: String, provider: &'static str },
    #[error(transparent)]
    Sim(#[from] sim::Error),
}

/// Fails before any side effect when the profile's provider cannot run here.
pub fn check_available(profile: &str, provider: Provider) -> Result<(), Error> {
    match provider {
        Provider::None => Ok(()),
        Provider::Sim => sim::binaries().map(drop).map_err(Error::from),
        _ => Err(Error::NotAvailable { profile: profile.to_string(), provider: provider.as_str() }),
    }
}
