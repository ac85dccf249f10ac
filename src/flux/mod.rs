//! The Flux layer: the local overlay, packing the working tree, and the `${VAR}` contract.

pub mod contract;
pub mod overlay;
pub mod pack;
