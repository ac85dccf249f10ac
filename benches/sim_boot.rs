//! How long the `sim` provider takes from `Sim::up` to every component Ready, and how much
//! memory the running set holds, against a peer measured in the same run: etcd and
//! kube-apiserver alone (the part every local Kubernetes pays for).
//!
//! Warm cache: the binaries are built. Each boot starts from an empty state directory, as a
//! first `devenv up --profile sim` does. Figures are printed, never asserted.
//!
//! `cargo bench --bench sim_boot` (SIM_BENCH_RUNS=N for more than 2 runs of each).

use std::path::Path;
use std::time::{Duration, Instant};

use devenv::providers::sim::{self, Lifetime, ProcessStatus, Scope, Sim};
use devenv::ui::SilentReporter;

struct Boot {
    ready: Duration,
    reuse: Duration,
    processes: Vec<ProcessStatus>,
}

impl Boot {
    fn rss(&self) -> u64 {
        self.processes.iter().filter_map(|p| p.rss_bytes).sum()
    }
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    runtime.block_on(run());
}

async fn run() {
    if let Err(error) = sim::binaries() {
        eprintln!("sim_boot: skipped: {error}; build them with `bash sim/build.sh`");
        return;
    }
    let runs: usize = std::env::var("SIM_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(2).max(1);
    let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("sim-bench-{}", std::process::id()));

    // Brings the binaries into the page cache; not counted.
    boot(&root.join("warm-up"), Scope::Apiserver).await;

    let mut peer = Vec::new();
    let mut full = Vec::new();
    for run in 0..runs {
        peer.push(boot(&root.join(format!("peer-{run}")), Scope::Apiserver).await);
        full.push(boot(&root.join(format!("full-{run}")), Scope::Full).await);
    }
    let _ = std::fs::remove_dir_all(&root);

    let peer_ready = median(peer.iter().map(|b| b.ready));
    let full_ready = median(full.iter().map(|b| b.ready));
    let peer_rss = median_u64(peer.iter().map(Boot::rss));
    let full_rss = median_u64(full.iter().map(Boot::rss));
    let reuse = median(full.iter().map(|b| b.reuse));

    println!("sim boot, warm cache, empty state dir, median of {runs} run(s)");
    println!("{:<34} {:>10} {:>12}", "", "ready", "RSS");
    println!(
        "{:<34} {:>8.2} s {:>8} MiB",
        "peer: etcd + kube-apiserver",
        peer_ready.as_secs_f64(),
        peer_rss / (1024 * 1024)
    );
    println!(
        "{:<34} {:>8.2} s {:>8} MiB",
        format!("sim: all {} processes", full[0].processes.len()),
        full_ready.as_secs_f64(),
        full_rss / (1024 * 1024)
    );
    println!(
        "{:<34} {:>8.2} x {:>10.2} x",
        "ratio sim / peer",
        full_ready.as_secs_f64() / peer_ready.as_secs_f64(),
        full_rss as f64 / peer_rss.max(1) as f64
    );
    println!("{:<34} {:>8} ms", "up of a running, healthy sim", reuse.as_millis());
    println!("runs (s): peer {:?}, sim {:?}", seconds(&peer), seconds(&full));
    println!("RSS per process (last sim run):");
    if let Some(last) = full.last() {
        for p in &last.processes {
            println!("  {:<26} {:>6} MiB", p.name, p.rss_bytes.unwrap_or(0) / (1024 * 1024));
        }
    }
}

async fn boot(dir: &Path, scope: Scope) -> Boot {
    let sim = Sim::new(dir).with_lifetime(Lifetime::Owned).with_scope(scope);
    let start = Instant::now();
    if let Err(error) = sim.up("bench", &SilentReporter).await {
        let tail = error.log().map(|log| format!("\n{}:\n{}", log.path.display(), log.lines)).unwrap_or_default();
        panic!("sim_boot: boot failed: {error}{tail}");
    }
    let ready = start.elapsed();
    let processes = sim.status().await.expect("status of a running sim");
    let start = Instant::now();
    sim.up("bench", &SilentReporter).await.expect("a second up");
    let reuse = start.elapsed();
    sim.down(true, &SilentReporter).await.expect("down");
    Boot { ready, reuse, processes }
}

fn median(values: impl Iterator<Item = Duration>) -> Duration {
    let mut values: Vec<Duration> = values.collect();
    values.sort();
    values[values.len() / 2]
}

fn median_u64(values: impl Iterator<Item = u64>) -> u64 {
    let mut values: Vec<u64> = values.collect();
    values.sort();
    values[values.len() / 2]
}

fn seconds(boots: &[Boot]) -> Vec<String> {
    boots.iter().map(|b| format!("{:.2}", b.ready.as_secs_f64())).collect()
}
