//! Names devenv gives its own Flux objects, and the annotations it asks Flux with: shared by
//! the layers that write them (`pack`, `deploy`) and the one that reads them back (`wait`).

/// The root Kustomization devenv creates.
pub const ROOT_NAME: &str = "devenv-root";
/// The name of the OCIRepository that serves the root Kustomization's files.
pub const SOURCE_NAME: &str = "devenv-source";
/// Asks a Flux object to reconcile now; the value is the request's token.
pub const REQUESTED_AT: &str = "reconcile.fluxcd.io/requestedAt";
/// With the same value as `requestedAt`, makes helm-controller reset a HelmRelease's
/// failure count and try again.
pub const RESET_AT: &str = "reconcile.fluxcd.io/resetAt";
/// What `{{ registry }}` shows as before the cluster, and so its registry, exists; an `up`
/// fills the environment's registry in once it does ([`Packed::fill_registry`](super::pack::Packed::fill_registry)).
pub const REGISTRY_PLACEHOLDER: &str = "<environment registry>";
