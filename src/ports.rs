//! Host ports on 127.0.0.1: chosen once, remembered, and moved only when something else took them.

use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::ops::RangeInclusive;

use rand::RngExt;

pub const LOOPBACK: Ipv4Addr = Ipv4Addr::LOCALHOST;
/// Overrides the range new host ports are chosen from (`FROM-TO`).
pub const RANGE_ENV: &str = "DEVENV_PORTS";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("port {port} on 127.0.0.1 is already in use")]
    InUse { port: u16 },
    #[error("cannot find a free port on 127.0.0.1")]
    NoFreePort(#[source] io::Error),
    #[error("{RANGE_ENV} is `{value}`, not a range of ports like 20000-20999")]
    BadRange { value: String },
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
    hold(port).is_some()
}

/// A listener on 127.0.0.1:`port`, if the port is free.
pub fn hold(port: u16) -> Option<TcpListener> {
    TcpListener::bind((LOOPBACK, port)).ok()
}

/// A free port for a listener that starts a little later, avoiding `taken`.
///
/// It is chosen below the kernel's ephemeral range: a port from that range (which is what
/// binding port 0 returns) can be taken by any outgoing connection's source port in the
/// seconds before the process that should listen on it starts.
pub fn pick_free(taken: &[u16]) -> Result<u16, Error> {
    pick_held(taken).map(|(port, _)| port)
}

/// Like [`pick_free`], but the port stays held by a listener of our own until the caller
/// drops it, so that no other devenv picks it in the meantime.
pub fn pick_held(taken: &[u16]) -> Result<(u16, TcpListener), Error> {
    let range = match std::env::var(RANGE_ENV) {
        Ok(value) => parse_range(&value).ok_or(Error::BadRange { value })?,
        Err(_) => listening_range(ephemeral_range()),
    };
    const TRIES: usize = 200;
    let (first, last) = (*range.start(), *range.end());
    let size = usize::from(last - first) + 1;
    let mut rng = rand::rng();
    // A small range (DEVENV_PORTS) is tried whole, from a random place in it.
    let offset = rng.random_range(0..size);
    let candidates: Vec<u16> = if size <= TRIES {
        (0..size).map(|i| first + ((offset + i) % size) as u16).collect()
    } else {
        (0..TRIES).map(|_| rng.random_range(range.clone())).collect()
    };
    for port in candidates {
        if taken.contains(&port) {
            continue;
        }
        if let Some(listener) = hold(port) {
            return Ok((port, listener));
        }
    }
    let tried = if size <= TRIES { String::new() } else { format!(" among {TRIES} tries") };
    Err(Error::NoFreePort(io::Error::other(format!("no free port{tried} in {first}-{last}"))))
}

/// `FROM-TO`, both ports, FROM no higher than TO.
fn parse_range(text: &str) -> Option<RangeInclusive<u16>> {
    let (from, to) = text.trim().split_once('-')?;
    let (from, to) = (from.trim().parse::<u16>().ok()?, to.trim().parse::<u16>().ok()?);
    (from >= 1 && from <= to).then_some(from..=to)
}

/// The kernel's range for outgoing connections' source ports. Where it cannot be read,
/// 32768-65535 covers both Linux's and macOS's defaults.
fn ephemeral_range() -> RangeInclusive<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut bounds = text.split_whitespace().map(str::parse::<u16>);
            Some(bounds.next()?.ok()?..=bounds.next()?.ok()?)
        })
        .unwrap_or(32768..=65535)
}

/// The ports devenv listens on: the registered ports below the ephemeral range, or above it
/// when a machine's range starts too low to leave room.
fn listening_range(ephemeral: RangeInclusive<u16>) -> RangeInclusive<u16> {
    const LOWEST: u16 = 10000;
    const ROOM: u16 = 1000;
    if ephemeral.start().saturating_sub(LOWEST) >= ROOM {
        LOWEST..=ephemeral.start() - 1
    } else if u16::MAX - ephemeral.end() >= ROOM {
        ephemeral.end() + 1..=u16::MAX
    } else {
        // The kernel hands out (almost) every port: no range is safe, so use all of them.
        1024..=u16::MAX
    }
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
        assert!(!ephemeral_range().contains(&picked), "{picked} is in the ephemeral range");
    }

    #[test]
    fn a_range_of_ports_is_from_dash_to() {
        assert_eq!(parse_range("20000-20003"), Some(20000..=20003));
        assert_eq!(parse_range(" 20000 - 20000 "), Some(20000..=20000));
        assert_eq!(parse_range("20003-20000"), None);
        assert_eq!(parse_range("0-10"), None);
        assert_eq!(parse_range("20000"), None);
        assert_eq!(parse_range("a-b"), None);
    }

    #[test]
    fn listening_ports_stay_out_of_the_ephemeral_range() {
        assert_eq!(listening_range(32768..=60999), 10000..=32767);
        assert_eq!(listening_range(1024..=60999), 61000..=65535);
        assert_eq!(listening_range(1024..=65000), 1024..=65535);
    }
}
