//! CPU time per process from Linux's `/proc`, so the bench can say where each request's cost went
//! (instances, PostgreSQL, the load generator) rather than only how many requests got through.
//! On a shared 2-core machine these figures are steadier than throughput: they do not depend on
//! what else ran at the same moment.
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s time fields (`getconf CLK_TCK`); 100 on every
/// Linux build this runs on.
const TICKS_PER_SECOND: u64 = 100;

/// The `/proc/<pid>/stat` fields after the command name, which may itself hold spaces or brackets.
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    // Field 3 (state) is a letter; number it 0 so the rest keep proc(5)'s numbering minus 3.
    Some(
        after_name
            .split_whitespace()
            .map(|field| field.parse().unwrap_or(0))
            .collect(),
    )
}

fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// User + system time of one process, and of its children it has waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessTime {
    pub own: Duration,
    pub reaped_children: Duration,
}

pub fn process_time(pid: &str) -> Option<ProcessTime> {
    let fields = stat_fields(pid)?;
    // proc(5): utime 14, stime 15, cutime 16, cstime 17; minus 3 for pid, comm and state.
    let field = |number: usize| fields.get(number - 3).copied().unwrap_or(0);
    Some(ProcessTime {
        own: ticks(field(14) + field(15)),
        reaped_children: ticks(field(16) + field(17)),
    })
}

/// Everything a PostgreSQL server has spent: the postmaster, the backends it has reaped and the
/// ones alive now. A backend's time moves into the postmaster's reaped total when it exits, so the
/// difference of two readings is what the server spent in between.
pub fn server_time(postmaster: u32) -> Option<Duration> {
    let postmaster_pid = postmaster.to_string();
    let root = process_time(&postmaster_pid)?;
    let mut total = root.own + root.reaped_children;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Some(fields) = stat_fields(pid) else {
            continue;
        };
        // proc(5) field 4 is the parent's pid.
        if fields.get(1).copied() == Some(u64::from(postmaster))
            && let Some(child) = process_time(pid)
        {
            total += child.own;
        }
    }
    Some(total)
}

/// The postmaster's pid, read from `postmaster.pid` in the server's data directory; `None` when
/// the server is not on this machine or not readable by us.
pub fn postmaster_pid(data_directory: &str) -> Option<u32> {
    let text = std::fs::read_to_string(format!("{data_directory}/postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

/// Reads the CPU time of the instances, of the database server and of this process at once.
pub struct Meter {
    instances: Vec<u32>,
    postmaster: u32,
}

/// One [`Meter`] reading; the difference of two is what each party spent in between.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    pub instances: Duration,
    pub server: Duration,
    /// This process (the load generator).
    pub this_process: Duration,
    /// Children this process ran to completion (pgbench).
    pub finished_children: Duration,
}

impl Meter {
    pub fn new(instances: Vec<u32>, postmaster: u32) -> Self {
        Self {
            instances,
            postmaster,
        }
    }

    pub fn read(&self) -> Reading {
        let this = process_time("self").unwrap_or_default();
        Reading {
            instances: self
                .instances
                .iter()
                .filter_map(|pid| process_time(&pid.to_string()))
                .map(|time| time.own)
                .sum(),
            server: server_time(self.postmaster).unwrap_or_default(),
            this_process: this.own,
            finished_children: this.reaped_children,
        }
    }
}

impl std::ops::Sub for Reading {
    type Output = Reading;

    fn sub(self, earlier: Reading) -> Reading {
        Reading {
            instances: self.instances.saturating_sub(earlier.instances),
            server: self.server.saturating_sub(earlier.server),
            this_process: self.this_process.saturating_sub(earlier.this_process),
            finished_children: self
                .finished_children
                .saturating_sub(earlier.finished_children),
        }
    }
}

impl std::ops::AddAssign for Reading {
    fn add_assign(&mut self, other: Reading) {
        self.instances += other.instances;
        self.server += other.server;
        self.this_process += other.this_process;
        self.finished_children += other.finished_children;
    }
}
