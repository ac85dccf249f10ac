//! Host ports on 127.0.0.1: chosen once, remembered, and moved only when something else took them.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("port {port} on 127.0.0.1 is already in use")]
    InUse { port: u16 },
    #[error("cannot find a free port on 127.0.0.1")]
    NoFreePort(#[source] io::Error),
}

/// The outcome of choosing a port, with the reason to tell the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The port pinned in devenv.yaml.
    Pinned(u16),
    /// The port remembered from an earlier `up`.
    Kept(u16),
    /// The remembered port is taken by something else; a new one was chosen.
    Moved { from: u16, to: u16 },
    /// No port remembered; a free one was chosen.
    New(u16),
}

impl Choice {
    pub fn port(self) -> u16 {
        match self {
            Choice::Pinned(p) | Choice::Kept(p) | Choice::New(p) | Choice::Moved { to: p, .. } => p,
        }
    }
}

/// Decides a host port. `ours` is the port the environment's own container already holds
/// (a held port is not free, but it is not taken by someone else either).
pub fn choose(
    pinned: Option<u16>,
    remembered: Option<u16>,
    ours: Option<u16>,
    is_free: impl Fn(u16) -> bool,
    mut pick: impl FnMut() -> Result<u16, Error>,
) -> Result<Choice, Error> {
    let usable = |port: u16| ours == Some(port) || is_free(port);
    match (pinned, remembered) {
        (Some(port), _) if usable(port) => Ok(Choice::Pinned(port)),
        (Some(port), _) => Err(Error::InUse { port }),
        (None, Some(port)) if usable(port) => Ok(Choice::Kept(port)),
        (None, Some(port)) => Ok(Choice::Moved { from: port, to: pick()? }),
        (None, None) => Ok(Choice::New(pick()?)),
    }
}

/// Whether nothing listens on 127.0.0.1:`port`.
pub fn is_free(port: u16) -> bool {
    TcpListener::bind((LOOPBACK, port)).is_ok()
}

/// A port the kernel considers free right now, avoiding `taken`.
pub fn pick_free(taken: &[u16]) -> Result<u16, Error> {
    for _ in 0..20 {
        let port = TcpListener::bind((LOOPBACK, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(Error::NoFreePort)?
            .port();
        if !taken.contains(&port) {
            return Ok(port);
        }
    }
    Err(Error::NoFreePort(io::Error::other("the kernel kept offering ports already chosen")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick_9000() -> Result<u16, Error> {
        Ok(9000)
    }

    #[test]
    fn pinned_port_wins_when_free_or_ours() {
        assert_eq!(choose(Some(3306), Some(4000), None, |_| true, pick_9000).unwrap(), Choice::Pinned(3306));
        assert_eq!(choose(Some(3306), None, Some(3306), |_| false, pick_9000).unwrap(), Choice::Pinned(3306));
    }

    #[test]
    fn pinned_port_taken_by_someone_else_is_an_error() {
        let error = choose(Some(3306), None, None, |_| false, pick_9000).unwrap_err();
        assert!(matches!(error, Error::InUse { port: 3306 }));
    }

    #[test]
    fn remembered_port_is_kept_or_moved() {
        assert_eq!(choose(None, Some(4000), None, |_| true, pick_9000).unwrap(), Choice::Kept(4000));
        assert_eq!(choose(None, Some(4000), Some(4000), |_| false, pick_9000).unwrap(), Choice::Kept(4000));
        assert_eq!(
            choose(None, Some(4000), None, |p| p != 4000, pick_9000).unwrap(),
            Choice::Moved { from: 4000, to: 9000 }
        );
    }

    #[test]
    fn new_port_is_picked() {
        assert_eq!(choose(None, None, None, |_| true, pick_9000).unwrap(), Choice::New(9000));
    }

    #[test]
    fn real_ports() {
        let listener = TcpListener::bind((LOOPBACK, 0)).unwrap();
        let held = listener.local_addr().unwrap().port();
        assert!(!is_free(held));
        let picked = pick_free(&[held]).unwrap();
        assert_ne!(picked, held);
        assert!(is_free(picked));
    }
}
