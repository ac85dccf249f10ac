//! devenv: a disposable copy of a Flux/EKS platform for every developer and pull request.

pub mod aws;
pub mod cli;
pub mod commands;
pub mod completion;
pub mod config;
pub mod docker;
pub mod envmap;
pub mod errors;
pub mod flux;
pub mod kube;
pub mod naming;
pub mod plan;
pub mod ports;
pub mod preview;
pub mod providers;
pub mod state;
pub mod substitutes;
pub mod ui;
pub mod version;

/// Chooses rustls' crypto provider, once: the HTTP clients (registries, probes) are built with
/// rustls but without a default provider, and panic if none was chosen.
pub fn init_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
