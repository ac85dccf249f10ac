//! Local processes: start with a log file, remember by pid file, check, stop, measure.
//!
//! A pid file holds the pid and the process's start time (field 22 of `/proc/PID/stat`), so a
//! pid the kernel has since given to another process is never mistaken for ours.
//!
//! Every component of one cluster runs in one process group led by a watchdog: a `sh` loop
//! that reads its standard input from a pipe held by the process that booted the cluster.
//! When that pipe closes without the word `release` (the owner crashed, was killed with
//! SIGKILL, or its test run ended), the watchdog sends SIGTERM to the whole group, waits, and
//! sends SIGKILL. A CLI that boots a cluster meant to outlive it sends `release` once the
//! cluster is ready; `down` then finds the processes again through their pid files.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Mutex, MutexGuard};

/// How the watchdog knows itself in `ps`: its `$0`.
pub(super) const WATCHDOG_NAME: &str = "devenv-sim-watchdog";

/// Tenths of a second between the watchdog's first SIGTERM and its SIGKILL.
const WATCHDOG_GRACE_TENTHS: u32 = 100;

/// Children of this process, kept so they are reaped (no zombies) and their exit status is
/// known when one stops while starting.
struct Registry {
    running: Vec<Child>,
    exited: BTreeMap<u32, ExitStatus>,
}

static CHILDREN: Mutex<Registry> = Mutex::new(Registry { running: Vec::new(), exited: BTreeMap::new() });

fn children() -> MutexGuard<'static, Registry> {
    CHILDREN.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Collects the exit status of every child of ours that has stopped.
pub(super) fn reap() {
    let mut registry = children();
    let Registry { running, exited } = &mut *registry;
    running.retain_mut(|child| match child.try_wait() {
        Ok(Some(status)) => {
            exited.insert(child.id(), status);
            false
        }
        Ok(None) => true,
        Err(_) => false,
    });
}

/// How a child of ours ended, if it was ours and has ended.
pub(super) fn exit_status(pid: i32) -> Option<String> {
    reap();
    let registry = children();
    u32::try_from(pid).ok().and_then(|pid| registry.exited.get(&pid)).map(describe_exit)
}

fn describe_exit(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => status.to_string(),
    }
}

/// What `/proc/PID/stat` says about a process.
struct ProcStat {
    state: char,
    start: u64,
}

fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        // Field 22, counted from field 3 (the state) at index 0.
        start: fields.get(19)?.parse().ok()?,
    })
}

/// A process we started: its pid and its start time, which together name it for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pid {
    pub pid: i32,
    pub start: u64,
}

impl Pid {
    fn of(pid: u32) -> io::Result<Pid> {
        let pid = i32::try_from(pid).map_err(io::Error::other)?;
        let stat =
            proc_stat(pid).ok_or_else(|| io::Error::other(format!("process {pid} vanished right after start")))?;
        Ok(Pid { pid, start: stat.start })
    }

    /// The pid file's content, or `None` when it is missing or unreadable.
    pub fn read(path: &Path) -> Option<Pid> {
        let text = fs::read_to_string(path).ok()?;
        let mut words = text.split_whitespace();
        Some(Pid { pid: words.next()?.parse().ok()?, start: words.next()?.parse().ok()? })
    }

    pub fn write(&self, path: &Path) -> io::Result<()> {
        fs::write(path, format!("{} {}\n", self.pid, self.start))
    }

    /// Whether this very process still runs (not a zombie, not a reused pid).
    pub fn alive(&self) -> bool {
        reap();
        matches!(proc_stat(self.pid), Some(stat) if stat.start == self.start && !matches!(stat.state, 'Z' | 'X' | 'x'))
    }

    /// Sends a signal if the process is still ours; a process that is gone is not an error.
    pub fn signal(&self, signal: i32) -> io::Result<()> {
        if !self.alive() {
            return Ok(());
        }
        // SAFETY: kill(2) has no memory-safety preconditions.
        if unsafe { libc::kill(self.pid, signal) } == 0 {
            return Ok(());
        }
        match io::Error::last_os_error() {
            e if e.raw_os_error() == Some(libc::ESRCH) => Ok(()),
            e => Err(e),
        }
    }

    /// Resident memory in bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss_bytes(&self) -> Option<u64> {
        if !self.alive() {
            return None;
        }
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The process's arguments, to recognise the watchdog.
    pub fn cmdline(&self) -> Vec<String> {
        fs::read(format!("/proc/{}/cmdline", self.pid))
            .map(|bytes| {
                bytes
                    .split(|b| *b == 0)
                    .filter(|arg| !arg.is_empty())
                    .map(|arg| String::from_utf8_lossy(arg).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What to run.
pub(super) struct Launch<'a> {
    pub binary: &'a Path,
    pub args: Vec<OsString>,
    pub env: Vec<(&'static str, OsString)>,
    pub cwd: &'a Path,
    pub log: &'a Path,
    /// The process group to join (the watchdog's).
    pub group: i32,
}

/// Starts a process with stdin closed and stdout and stderr appended to its log file (the
/// previous boot's log is kept as `NAME.previous.log`).
pub(super) fn spawn(launch: Launch<'_>) -> io::Result<Pid> {
    if launch.log.exists() {
        let previous = previous_log(launch.log);
        let _ = fs::rename(launch.log, previous);
    }
    let out = OpenOptions::new().create(true).append(true).open(launch.log)?;
    let err = out.try_clone()?;
    let mut command = Command::new(launch.binary);
    command
        .args(&launch.args)
        .env_remove("KUBECONFIG")
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(launch.cwd)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(launch.group);
    let child = command.spawn()?;
    let pid = Pid::of(child.id());
    children().running.push(child);
    pid
}

fn previous_log(log: &Path) -> PathBuf {
    let stem = log.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    log.with_file_name(format!("{stem}.previous.log"))
}

/// The last `lines` lines of a log file (at most the last 64 KiB are read).
pub(super) fn tail(path: &Path, lines: usize) -> String {
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A log file's lines as a stream: those it holds, then with `follow` those appended, also
/// across a restart of its process (which moves the file aside and starts a new one).
pub(super) fn log_lines(path: PathBuf, follow: bool) -> impl futures_util::Stream<Item = io::Result<String>> {
    use std::io::BufRead as _;
    use std::os::unix::fs::MetadataExt as _;

    struct Reader {
        path: PathBuf,
        /// The open file and its inode.
        file: Option<(io::BufReader<fs::File>, u64)>,
        partial: Vec<u8>,
        follow: bool,
        done: bool,
    }
    let start = Reader { path, file: None, partial: Vec::new(), follow, done: false };
    futures_util::stream::unfold(start, |mut r| async move {
        if r.done {
            return None;
        }
        loop {
            if r.file.is_none() {
                match fs::File::open(&r.path).and_then(|f| Ok((f.metadata()?.ino(), f))) {
                    Ok((inode, file)) => r.file = Some((io::BufReader::new(file), inode)),
                    Err(error) => {
                        r.done = true;
                        return Some((Err(error), r));
                    }
                }
            }
            let (reader, inode) = r.file.as_mut().expect("opened above");
            match reader.read_until(b'\n', &mut r.partial) {
                Err(error) => {
                    r.done = true;
                    return Some((Err(error), r));
                }
                Ok(0) if !r.follow => {
                    r.done = true;
                    if r.partial.is_empty() {
                        return None;
                    }
                    let line = String::from_utf8_lossy(&std::mem::take(&mut r.partial)).into_owned();
                    return Some((Ok(line), r));
                }
                Ok(0) => {
                    let moved = fs::metadata(&r.path).is_ok_and(|m| m.ino() != *inode);
                    if moved {
                        r.file = None;
                    } else {
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                }
                Ok(_) if r.partial.ends_with(b"\n") => {
                    let bytes = std::mem::take(&mut r.partial);
                    let line = String::from_utf8_lossy(&bytes).trim_end_matches(['\n', '\r']).to_string();
                    return Some((Ok(line), r));
                }
                // The writer is mid-line: the rest comes with the next read.
                Ok(_) => {}
            }
        }
    })
}

/// The shell program of the watchdog. It learns the group's members from its standard
/// input (`pid N`, or `late N` for those to stop after the others, like etcd under
/// kube-apiserver), so when its owner goes it stops them in order and exits as soon as
/// they are gone; anything else in the group gets SIGTERM too, and SIGKILL at the end.
fn watchdog_script() -> String {
    format!(
        r#"trap '' HUP INT TERM
first=
late=
while IFS= read -r line; do
  case $line in
    release) exit 0 ;;
    "pid "*) first="$first ${{line#pid }}" ;;
    "late "*) late="$late ${{line#late }}" ;;
  esac
done
running() {{
  stat=
  read -r stat < "/proc/$1/stat" 2>/dev/null || return 1
  case ${{stat##*") "}} in Z*|X*) return 1 ;; esac
}}
gone() {{
  n=0
  while [ "$n" -lt "$2" ]; do
    alive=
    for p in $1; do
      if running "$p"; then alive=1; fi
    done
    [ -n "$alive" ] || return 0
    sleep 0.1
    n=$((n + 1))
  done
  return 1
}}
for p in $first; do kill -TERM "$p" 2>/dev/null; done
gone "$first" {half}
for p in $late; do kill -TERM "$p" 2>/dev/null; done
kill -TERM 0 2>/dev/null
gone "$first $late" {half} && exit 0
kill -KILL 0
"#,
        half = WATCHDOG_GRACE_TENTHS / 2
    )
}

/// The leader of a cluster's process group; see the module documentation.
pub(super) struct Watchdog {
    pub pid: Pid,
    stdin: ChildStdin,
}

impl Watchdog {
    pub fn spawn(log: &Path) -> io::Result<Watchdog> {
        let out = OpenOptions::new().create(true).append(true).open(log)?;
        let err = out.try_clone()?;
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(watchdog_script())
            .arg(WATCHDOG_NAME)
            .stdin(Stdio::piped())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()?;
        let stdin = child.stdin.take().ok_or_else(|| io::Error::other("the watchdog has no standard input"))?;
        let pid = Pid::of(child.id())?;
        children().running.push(child);
        Ok(Watchdog { pid, stdin })
    }

    /// The process group every component joins.
    pub fn group(&self) -> i32 {
        self.pid.pid
    }

    /// Tells the watchdog about a member of the group; `late` ones are stopped after the
    /// others.
    pub fn watch(&mut self, member: Pid, late: bool) -> io::Result<()> {
        let word = if late { "late" } else { "pid" };
        writeln!(self.stdin, "{word} {}", member.pid)?;
        self.stdin.flush()
    }

    /// Lets the group outlive this process: the watchdog exits without stopping anyone.
    pub fn release(mut self) {
        let _ = writeln!(self.stdin, "release");
        let _ = self.stdin.flush();
    }
}

/// Whether a pid file names a live watchdog of ours (`sh -c SCRIPT devenv-sim-watchdog`).
pub(super) fn is_watchdog(pid: &Pid) -> bool {
    pid.alive() && pid.cmdline().last().map(String::as_str) == Some(WATCHDOG_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_followed_log_goes_on_across_partial_lines_and_a_restart() {
        use futures_util::StreamExt;
        let temp = tempfile::tempdir().unwrap();
        let log = temp.path().join("c.log");
        fs::write(&log, "one\ntwo\n").unwrap();
        let all: Vec<String> = log_lines(log.clone(), false).map(Result::unwrap).collect().await;
        assert_eq!(all, ["one", "two"]);

        let mut lines = Box::pin(log_lines(log.clone(), true));
        let mut next = async || {
            let line = tokio::time::timeout(std::time::Duration::from_secs(5), lines.next()).await;
            line.expect("a line within 5s").unwrap().unwrap()
        };
        assert_eq!((next().await, next().await), ("one".to_string(), "two".to_string()));
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"thr").unwrap();
        let writer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(400));
            file.write_all(b"ee\n").unwrap();
        });
        assert_eq!(next().await, "three", "a line written in two parts comes whole");
        writer.join().unwrap();
        // A restart moves the log aside and starts a new one.
        fs::rename(&log, previous_log(&log)).unwrap();
        fs::write(&log, "four\n").unwrap();
        assert_eq!(next().await, "four");
    }

    #[test]
    fn pid_files_round_trip_and_name_this_process() {
        let temp = tempfile::tempdir().unwrap();
        let me = Pid::of(std::process::id()).unwrap();
        assert!(me.alive());
        let path = temp.path().join("me.pid");
        me.write(&path).unwrap();
        assert_eq!(Pid::read(&path), Some(me));
        let reused = Pid { start: me.start + 1, ..me };
        assert!(!reused.alive(), "another start time is another process");
        assert!(me.rss_bytes().unwrap() > 0);
    }

    #[test]
    fn a_spawned_process_is_reaped_and_its_exit_reported() {
        let temp = tempfile::tempdir().unwrap();
        let log = temp.path().join("x.log");
        let watchdog = Watchdog::spawn(&temp.path().join("w.log")).unwrap();
        for _ in 0..100 {
            if is_watchdog(&watchdog.pid) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(is_watchdog(&watchdog.pid));
        let pid = spawn(Launch {
            binary: Path::new("/bin/sh"),
            args: vec!["-c".into(), "echo hello; exit 3".into()],
            env: vec![],
            cwd: temp.path(),
            log: &log,
            group: watchdog.group(),
        })
        .unwrap();
        for _ in 0..100 {
            if !pid.alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!pid.alive());
        assert_eq!(exit_status(pid.pid).as_deref(), Some("exit code 3"));
        assert_eq!(tail(&log, 5), "hello");
        let watchdog_pid = watchdog.pid;
        watchdog.release();
        for _ in 0..100 {
            if !watchdog_pid.alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!watchdog_pid.alive(), "a released watchdog exits");
    }

    #[test]
    fn the_watchdog_stops_its_group_when_its_owner_goes() {
        let temp = tempfile::tempdir().unwrap();
        let mut watchdog = Watchdog::spawn(&temp.path().join("w.log")).unwrap();
        let member = spawn(Launch {
            binary: Path::new("/bin/sleep"),
            args: vec!["600".into()],
            env: vec![],
            cwd: temp.path(),
            log: &temp.path().join("sleep.log"),
            group: watchdog.group(),
        })
        .unwrap();
        watchdog.watch(member, false).unwrap();
        let late = spawn(Launch {
            binary: Path::new("/bin/sleep"),
            args: vec!["600".into()],
            env: vec![],
            cwd: temp.path(),
            log: &temp.path().join("late.log"),
            group: watchdog.group(),
        })
        .unwrap();
        watchdog.watch(late, true).unwrap();
        assert!(member.alive() && late.alive());
        // Closing the pipe is what the kernel does when the owner dies.
        let watchdog_pid = watchdog.pid;
        drop(watchdog);
        for _ in 0..250 {
            if !member.alive() && !late.alive() && !watchdog_pid.alive() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(!member.alive() && !late.alive(), "the members are stopped");
        assert!(!watchdog_pid.alive(), "the watchdog exits after its group");
    }
}
