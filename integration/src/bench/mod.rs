//! `integration bench`: closed-loop load on the hot paths through the instances, side by side with
//! pgbench running the very statements the service issues, on a copy of the same fixture.
mod beside;
mod charts;
mod findings;
pub mod fixture;
mod live;
mod pgbench;
mod report;
mod scale;
mod sessions;
mod stand;
pub mod stats;
mod watch;
mod workloads;

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use self::{findings::Findings, stand::Stand};
pub use self::{stats::Measurement, workloads::Workload};
use crate::cpu::postmaster_pid;

pub struct BenchOptions {
    pub binary: PathBuf,
    pub instance_ports: Vec<u16>,
    pub database_url: String,
    pub clients: usize,
    pub duration: Duration,
    pub rounds: u32,
    pub workloads: Vec<Workload>,
    pub pool_size: u32,
    /// Tokio worker threads per instance (`TOKIO_WORKER_THREADS`).
    pub worker_threads: usize,
    /// The instances' `CONSUMERS` (`None`: their default, every consumer).
    pub consumers: Option<String>,
    pub pgbench: bool,
    /// Relay the event log to a nats-server of the bench's own during the load.
    pub relay: bool,
    /// The instances reach PostgreSQL through a PgBouncer of the bench's own (transaction mode).
    pub through_pgbouncer: bool,
    /// The instances read from a streaming standby of the bench's database server.
    pub read_replica: bool,
    /// Where the pgbench scripts are (those of the binary under test, when comparing builds).
    pub pgbench_dir: PathBuf,
    /// `openVisits` subscribers open during the workloads (their delivery latency is reported).
    pub subscribers: usize,
    /// Idle subscriptions opened on one instance afterwards, to report what they cost in memory.
    pub idle_subscriptions: usize,
    /// Where to write `bench.json` and `bench.html` (checked writable before the run).
    pub report_dir: Option<PathBuf>,
}

/// The pid of the PostgreSQL server behind `db`, if it runs on this machine where we can see it.
async fn local_postmaster(db: &DatabaseConnection) -> Option<u32> {
    let row = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT current_setting('data_directory') AS directory",
        ))
        .await
        .ok()??;
    let directory: String = row.try_get("", "directory").ok()?;
    postmaster_pid(&directory)
}

/// Raises this process's open-file limit (soft and, if it must, hard) to at least `wanted`.
fn raise_open_files(wanted: usize) -> anyhow::Result<()> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let wanted = u64::try_from(wanted).unwrap_or(u64::MAX);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= wanted {
        return Ok(());
    }
    setrlimit(Resource::RLIMIT_NOFILE, wanted, hard.max(wanted)).map_err(|error| {
        anyhow::anyhow!(
            "--idle-subscriptions and --subscribers need {wanted} open files in the bench and in each \
             instance, and the hard limit here is {hard} ({error}: raising it needs root with \
             CAP_SYS_RESOURCE, or `ulimit -Hn` set higher by whoever starts the bench)"
        )
    })
}

/// Time for one Argon2id verification with the service's parameters, on this machine.
fn argon2_verify_time() -> anyhow::Result<Duration> {
    use argon2::{
        Argon2,
        password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
    };
    let hash = Argon2::default()
        .hash_password(b"reference")
        .map_err(|error| anyhow::anyhow!("{error}"))?
        .to_string();
    let parsed = PasswordHash::new(&hash).map_err(|error| anyhow::anyhow!("{error}"))?;
    let started = Instant::now();
    for _ in 0..5 {
        let _ = Argon2::default().verify_password(b"reference", &parsed);
    }
    Ok(started.elapsed() / 5)
}

/// Runs the benchmark and prints its report; fails only if the invariants break. Three phases:
/// the stand is set up ([`Stand::set_up`]), each workload is measured round by round
/// ([`Stand::measure`]), and what was measured is reported ([`Stand::report`]).
pub async fn run_bench(options: BenchOptions) -> anyhow::Result<bool> {
    // Every socket is a file on both ends; the instances inherit the limit.
    raise_open_files(options.idle_subscriptions + options.subscribers + 1_000)?;
    let stand = Stand::set_up(&options).await?;
    stand.print_header(&options);
    let subscribers = stand.subscribers(&options)?;
    let mut findings = Findings::new(&options, stand.cores);
    // It replaces the visits the others use, so it goes last whatever order it was asked in.
    let mut workloads = options.workloads.clone();
    workloads.sort_by_key(|workload| *workload == Workload::ReadAtScale);
    for workload in workloads {
        if workload == Workload::ReadAtScale {
            findings.scale_lines =
                scale::run(&stand.db, &stand.fixture, &stand.password_hash).await?;
            continue;
        }
        let measured = stand
            .measure(&options, workload, subscribers.as_ref(), &mut findings.run)
            .await?;
        findings.add(&options, workload, measured, stand.metered())?;
    }
    if let Some(subscribers) = subscribers {
        findings.probe_line = stand
            .probe_deliveries(subscribers, options.duration.as_secs().clamp(2, 6))
            .await?;
    }
    stand.report(&options, findings).await
}
