//! One command at a time changes an environment, and two environments never choose the same
//! port.
//!
//! `up` and `down` hold an advisory lock (flock(2)) on `<env state dir>/lock` while they run;
//! `status` and `plan` only read, and never wait. The lock file names its holder (pid, command
//! line, since when) for the message of a command that waits. The kernel releases the lock
//! when its holder dies, however it dies, so a killed command leaves nothing to clean up:
//! the next command takes the lock at once and says whose it was. A holder that ends
//! normally empties the file, so a name found there on taking the lock is one that died.
//!
//! `down --purge` deletes the directory, lock file included, while it holds the lock; a
//! command waiting on the deleted file sees that the path no longer leads to the file it
//! locked, and locks the new one.
//!
//! New host ports are chosen under a machine-wide lock, `<state root>/ports.lock`: a
//! [`PortBook`] holds it from reading the ports every other environment remembers until the
//! caller has saved its own choice.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::{Error, State, Store};
use crate::ui::{Reporter, ReporterExt, Status};

/// The lock file in an environment's state directory.
pub const LOCK_FILE: &str = "lock";
/// The machine-wide lock of port choices, in the state root.
const PORTS_LOCK_FILE: &str = "ports.lock";
/// How often a waiting command tries again.
const POLL: Duration = Duration::from_millis(100);
/// How long the port book may be held by others before choosing a port fails; its holders
/// keep it for milliseconds.
const PORT_BOOK_DEADLINE: Duration = Duration::from_secs(30);
/// How long a holder may take to write its name after locking before a waiter names nobody.
const NAMING_GRACE: Duration = Duration::from_secs(1);

/// Who holds an environment's lock, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    pub pid: u32,
    /// The command line, e.g. `devenv up --profile sim`.
    pub command: String,
    /// When it took the lock (RFC 3339, UTC).
    pub since: String,
}

impl Holder {
    fn me(command: &str) -> Self {
        let now = jiff::Timestamp::now();
        let since = jiff::Timestamp::from_second(now.as_second()).unwrap_or(now);
        Holder { pid: std::process::id(), command: command.to_string(), since: since.to_string() }
    }

    /// `` `devenv up` (pid 4242, since 2025-06-01T12:00:03Z, 40s ago) ``.
    pub fn describe(&self) -> String {
        let ago = self
            .since
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|since| u64::try_from(jiff::Timestamp::now().as_second() - since.as_second()).ok())
            .map(|seconds| format!(", {} ago", human(Duration::from_secs(seconds))))
            .unwrap_or_default();
        format!("`{}` (pid {}, since {}{ago})", self.command, self.pid, self.since)
    }
}

/// The holder's description, or a word for one that has not written its name.
pub fn describe(holder: Option<&Holder>) -> String {
    holder.map(Holder::describe).unwrap_or_else(|| "another devenv command".to_string())
}

/// `90s`, `5m`, `1m30s`; under a second, `0.4s`.
pub fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match (seconds / 60, seconds % 60) {
        (0, 0) => format!("{:.1}s", duration.as_secs_f64()),
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// The lock of one environment, held until dropped.
#[derive(Debug)]
pub struct EnvLock {
    file: File,
    /// The holder that ended without releasing the lock, when this one took it over.
    took_over: Option<Holder>,
}

impl EnvLock {
    /// The command that was killed or crashed holding the environment, if this lock was
    /// taken over from it.
    pub fn took_over(&self) -> Option<&Holder> {
        self.took_over.as_ref()
    }
}

impl Drop for EnvLock {
    fn drop(&mut self) {
        // Released cleanly: no name is left for the next holder to report as dead. Closing
        // the file releases the lock.
        let _ = self.file.set_len(0);
    }
}

/// The ports every other environment of this machine remembers, read under the machine-wide
/// port lock, which is held until this is dropped.
#[derive(Debug)]
pub struct PortBook {
    _file: File,
    pub taken: BTreeSet<u16>,
}

/// One try at an advisory lock.
enum Attempt {
    Locked(File),
    Busy,
    /// The file went away between opening and locking it (`down --purge`): try again.
    Gone,
}

fn attempt(dir: &Path, path: &Path, private: bool) -> io::Result<Attempt> {
    fs::create_dir_all(dir)?;
    if private {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    let file = match OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Attempt::Gone),
        Err(e) => return Err(e),
    };
    // SAFETY: flock(2) on a descriptor we own; it is closed (and the lock released) with `file`.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Ok(Attempt::Busy),
            _ => Err(error),
        };
    }
    let locked = file.metadata()?;
    match fs::metadata(path) {
        Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => Ok(Attempt::Locked(file)),
        Ok(_) => Ok(Attempt::Gone),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Attempt::Gone),
        Err(e) => Err(e),
    }
}

fn parse_holder(bytes: &[u8]) -> Option<Holder> {
    serde_json::from_slice(bytes).ok()
}

impl Store {
    fn lock_file(&self) -> PathBuf {
        self.dir.join(LOCK_FILE)
    }

    /// Takes the environment's lock for `command` (a command line), waiting up to `timeout`
    /// for the command that holds it, and telling `reporter` who that is.
    pub async fn lock(&self, command: &str, timeout: Duration, reporter: &dyn Reporter) -> Result<EnvLock, Error> {
        let path = self.lock_file();
        let lock_error = |source| Error::Lock { path: path.clone(), source };
        let env = self.dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let step = format!("lock/{env}");
        let started = Instant::now();
        // The holder the waiting message last named, once there is a message.
        let mut named: Option<Option<Holder>> = None;
        loop {
            match attempt(&self.dir, &path, true).map_err(lock_error)? {
                Attempt::Gone => tokio::task::yield_now().await,
                Attempt::Locked(mut file) => {
                    let mut left = Vec::new();
                    file.read_to_end(&mut left).map_err(lock_error)?;
                    let text = serde_json::to_vec(&Holder::me(command)).expect("the holder serialises");
                    file.set_len(0)
                        .and_then(|()| file.rewind())
                        .and_then(|()| file.write_all(&text))
                        .map_err(lock_error)?;
                    if named.is_some() {
                        reporter.finished(&step, Status::Ok, "free; going on", started.elapsed());
                    }
                    let took_over = parse_holder(&left);
                    if let Some(dead) = &took_over {
                        reporter.warning(&format!(
                            "{} ended without releasing environment `{env}` (it was killed or crashed); taking over",
                            dead.describe()
                        ));
                    }
                    return Ok(EnvLock { file, took_over });
                }
                Attempt::Busy => {
                    let holder = fs::read(&path).ok().and_then(|bytes| parse_holder(&bytes));
                    let waited = started.elapsed();
                    if waited >= timeout {
                        if named.is_some() {
                            reporter.finished(&step, Status::Failed, "still held", waited);
                        }
                        return Err(Error::Busy { env, holder, waited });
                    }
                    // The holder writes its name just after it locks: a moment before naming nobody.
                    if (holder.is_some() || waited >= NAMING_GRACE) && named.as_ref() != Some(&holder) {
                        let message = format!(
                            "waiting for {} to finish with this environment (up to {}; --timeout)",
                            describe(holder.as_ref()),
                            human(timeout)
                        );
                        match named {
                            None => reporter.started(&step, &message),
                            Some(_) => reporter.progress(&step, &message),
                        }
                        named = Some(holder);
                    }
                    tokio::time::sleep(POLL.min(timeout - waited)).await;
                }
            }
        }
    }

    /// The state root (`<root>/envs/<env>` is this environment's directory).
    fn root(&self) -> Option<&Path> {
        self.dir.parent().and_then(Path::parent)
    }

    /// The host ports the other environments of this machine remember. A state file that
    /// cannot be read names none.
    pub fn ports_of_other_envs(&self) -> BTreeSet<u16> {
        let Some(envs) = self.dir.parent() else { return BTreeSet::new() };
        let Ok(entries) = fs::read_dir(envs) else { return BTreeSet::new() };
        entries
            .flatten()
            .filter(|entry| entry.path() != self.dir)
            .filter_map(|entry| fs::read(entry.path().join(super::STATE_FILE)).ok())
            .filter_map(|bytes| serde_json::from_slice::<State>(&bytes).ok())
            .flat_map(|state| state.services.into_values().flat_map(|s| s.host_ports.into_values()))
            .collect()
    }

    /// Takes the machine-wide port lock and reads what the other environments remember;
    /// hold it until this environment's choices are saved.
    pub async fn port_book(&self) -> Result<PortBook, Error> {
        let root = self.root().unwrap_or(&self.dir).to_path_buf();
        let path = root.join(PORTS_LOCK_FILE);
        let lock_error = |source| Error::Lock { path: path.clone(), source };
        let started = Instant::now();
        loop {
            match attempt(&root, &path, false).map_err(lock_error)? {
                Attempt::Locked(file) => return Ok(PortBook { _file: file, taken: self.ports_of_other_envs() }),
                Attempt::Gone => tokio::task::yield_now().await,
                Attempt::Busy if started.elapsed() >= PORT_BOOK_DEADLINE => {
                    return Err(lock_error(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("another devenv held it for over {}", human(PORT_BOOK_DEADLINE)),
                    )));
                }
                Attempt::Busy => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::ServiceState;
    use crate::ui::{Event, SilentReporter};
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Keeps what a command would show.
    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl Reporter for Recorder {
        fn report(&self, event: Event<'_>) {
            let line = match event {
                Event::Started { message, .. } | Event::Progress { message, .. } => message.to_string(),
                Event::Finished { message, .. } => format!("finished: {message}"),
                Event::Warning { message } => format!("warning: {message}"),
            };
            self.0.lock().unwrap().push(line);
        }
    }

    fn store(root: &Path, env: &str) -> Store {
        Store { dir: root.join("envs").join(env) }
    }

    #[tokio::test]
    async fn a_second_holder_waits_and_times_out_naming_the_first() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path(), "shop");
        let first = store.lock("devenv up", Duration::ZERO, &SilentReporter).await.unwrap();
        let mode = fs::metadata(store.dir()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);

        let recorder = Recorder::default();
        let started = Instant::now();
        let error = store.lock("devenv down", Duration::from_millis(300), &recorder).await.unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(300));
        let Error::Busy { env, holder: Some(holder), .. } = &error else { panic!("{error:?}") };
        assert_eq!((env.as_str(), holder.pid, holder.command.as_str()), ("shop", std::process::id(), "devenv up"));
        assert!(error.to_string().starts_with("environment `shop` is in use by `devenv up` (pid "), "{error}");
        let shown = recorder.0.lock().unwrap().join("\n");
        assert!(shown.contains("waiting for `devenv up` (pid "), "{shown}");

        drop(first);
        assert!(fs::read(store.lock_file()).unwrap().is_empty(), "a clean release leaves no name");
        let recorder = Recorder::default();
        let _second = store.lock("devenv down", Duration::ZERO, &recorder).await.unwrap();
        assert!(recorder.0.lock().unwrap().is_empty(), "nothing to report: {:?}", recorder.0.lock().unwrap());
    }

    #[tokio::test]
    async fn a_waiter_goes_on_when_the_holder_releases() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path(), "shop");
        let first = store.lock("devenv up", Duration::ZERO, &SilentReporter).await.unwrap();
        let release = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            drop(first);
        });
        let started = Instant::now();
        let _second = store.lock("devenv up", Duration::from_secs(10), &SilentReporter).await.unwrap();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(2), "{waited:?}");
        release.await.unwrap();
    }

    #[tokio::test]
    async fn a_name_left_in_the_file_is_a_holder_that_died_and_is_taken_over() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path(), "shop");
        fs::create_dir_all(store.dir()).unwrap();
        let dead = Holder { pid: 999_999, command: "devenv up".into(), since: "2025-06-01T12:00:03Z".into() };
        fs::write(store.lock_file(), serde_json::to_vec(&dead).unwrap()).unwrap();
        let recorder = Recorder::default();
        let _lock = store.lock("devenv down --purge", Duration::ZERO, &recorder).await.unwrap();
        let shown = recorder.0.lock().unwrap().join("\n");
        assert!(
            shown.starts_with("warning: `devenv up` (pid 999999, since 2025-06-01T12:00:03Z, ")
                && shown.contains("ended without releasing environment `shop`"),
            "{shown}"
        );
        let now: Holder = serde_json::from_slice(&fs::read(store.lock_file()).unwrap()).unwrap();
        assert_eq!((now.pid, now.command.as_str()), (std::process::id(), "devenv down --purge"));
    }

    #[tokio::test]
    async fn a_waiter_on_a_lock_file_deleted_by_purge_locks_the_new_one() {
        let root = tempfile::tempdir().unwrap();
        let store = store(root.path(), "shop");
        let first = store.lock("devenv down --purge", Duration::ZERO, &SilentReporter).await.unwrap();
        let waiter = {
            let store = store.clone();
            tokio::spawn(async move { store.lock("devenv up", Duration::from_secs(10), &SilentReporter).await })
        };
        tokio::time::sleep(Duration::from_millis(250)).await;
        store.remove().unwrap();
        drop(first);
        let second = waiter.await.unwrap().unwrap();
        // The waiter holds the file at the path, so a third command must wait.
        assert!(store.lock_file().exists());
        assert!(matches!(store.lock("devenv up", Duration::ZERO, &SilentReporter).await, Err(Error::Busy { .. })));
        drop(second);
    }

    #[tokio::test]
    async fn the_port_book_holds_the_ports_other_environments_remember() {
        let root = tempfile::tempdir().unwrap();
        let (shop, other) = (store(root.path(), "shop"), store(root.path(), "other"));
        let mut state = State::new("other", Path::new("/repo"), "standalone");
        state.services.insert(
            "db".into(),
            ServiceState {
                kind: "rds-mariadb".into(),
                host_ports: BTreeMap::from([("sql".into(), 20001)]),
                ..Default::default()
            },
        );
        other.save(&state).unwrap();
        let mut own = State::new("shop", Path::new("/repo"), "standalone");
        own.services.insert(
            "db".into(),
            ServiceState {
                kind: "rds-mariadb".into(),
                host_ports: BTreeMap::from([("sql".into(), 20002)]),
                ..Default::default()
            },
        );
        shop.save(&own).unwrap();
        fs::create_dir_all(root.path().join("envs/broken")).unwrap();
        fs::write(root.path().join("envs/broken/state.json"), "{not json").unwrap();

        let book = shop.port_book().await.unwrap();
        assert_eq!(book.taken, BTreeSet::from([20001]), "its own and unreadable ones are not counted");
        // A second chooser waits for the first to save.
        let waiter = tokio::spawn(async move { other.port_book().await.map(|b| b.taken) });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiter.is_finished());
        drop(book);
        assert_eq!(waiter.await.unwrap().unwrap(), BTreeSet::from([20002]));
    }

    #[test]
    fn durations_read_like_the_flags() {
        assert_eq!(human(Duration::from_secs(300)), "5m");
        assert_eq!(human(Duration::from_secs(90)), "1m30s");
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_millis(400)), "0.4s");
    }
}
