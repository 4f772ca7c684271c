//! CPU time per process from Linux's `/proc`, so the bench can say where each request's cost went
//! (instances, PostgreSQL, the load generator) rather than only how many requests got through.
//! On a shared 2-core machine these figures are steadier than throughput: they do not depend on
//! what else ran at the same moment.
use std::time::Duration;

/// Clock ticks per second of `/proc/<pid>/stat`'s time fields (`getconf CLK_TCK`); 100 on every
/// Linux build this runs on.
const TICKS_PER_SECOND: u64 = 100;

fn ticks(ticks: u64) -> Duration {
    Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND)
}

/// User + system time of one process, and of its children it has waited for.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessTime {
    pub parent: u64,
    pub own: Duration,
    pub reaped_children: Duration,
}

/// Reads `/proc/<pid>/stat` once.
pub fn process_time(pid: &str) -> Option<ProcessTime> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may itself hold spaces or brackets; the fields after it start at field 3
    // (the state letter), so proc(5)'s field n is at index n - 3.
    let fields: Vec<u64> = stat[stat.rfind(')')? + 2..]
        .split_whitespace()
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    let field = |number: usize| fields.get(number - 3).copied().unwrap_or(0);
    // proc(5): ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    Some(ProcessTime {
        parent: field(4),
        own: ticks(field(14) + field(15)),
        reaped_children: ticks(field(16) + field(17)),
    })
}

/// Everything a PostgreSQL server has spent: the postmaster, the backends it has reaped and the
/// ones alive now. A backend's time moves into the postmaster's reaped total when it exits, so the
/// difference of two readings is what the server spent in between.
pub fn server_time(postmaster: u32) -> Option<Duration> {
    let root = process_time(&postmaster.to_string())?;
    let mut total = root.own + root.reaped_children;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|name| name.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Some(child) = process_time(pid)
            && child.parent == u64::from(postmaster)
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
