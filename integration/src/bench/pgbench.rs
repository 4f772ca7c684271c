//! The reference side: pgbench running the service's own statements (`integration/pgbench/`).
use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::Context;

use super::stats::{Measurement, Summary};

fn find_pgbench() -> anyhow::Result<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version: u32 = entry.file_name().to_str()?.parse().ok()?;
            let binary = entry.path().join("bin/pgbench");
            binary.exists().then_some((version, binary))
        })
        .collect();
    candidates.sort();
    if let Some((_, binary)) = candidates.pop() {
        return Ok(binary);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("pgbench"))
        .find(|binary| binary.exists())
        .context("pgbench not found (Debian: apt-get install postgresql)")
}

pub fn run_pgbench(
    database_url: &str,
    script: &Path,
    clients: usize,
    duration: Duration,
    run: u32,
    first_iteration: u64,
) -> anyhow::Result<Summary> {
    let log_dir =
        std::env::temp_dir().join(format!("home-visits-pgbench-{}-{run}", std::process::id()));
    let _ = std::fs::remove_dir_all(&log_dir);
    std::fs::create_dir_all(&log_dir)?;
    let output = Command::new(find_pgbench()?)
        .args(["-n", "-M", "prepared", "-j", "2"])
        .arg(format!("--client={clients}"))
        .arg(format!("--time={}", duration.as_secs().max(1)))
        .args([
            "-D",
            &format!("run={run}"),
            "-D",
            &format!("i={first_iteration}"),
            "-D",
            &format!("clients={clients}"),
        ])
        .arg("--log")
        .arg(format!("--log-prefix={}", log_dir.join("tx").display()))
        .arg("-f")
        .arg(script)
        .arg(database_url)
        .output()
        .context("running pgbench")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    anyhow::ensure!(
        output.status.success(),
        "pgbench failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tps = stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .context("no tps in pgbench's output")?;
    let mut measured = Measurement::default();
    for entry in std::fs::read_dir(&log_dir)? {
        let text = std::fs::read_to_string(entry?.path())?;
        // Per-transaction log lines: client id, transaction number, latency in µs, ...
        text.lines()
            .filter_map(|line| line.split_whitespace().nth(2)?.parse::<u64>().ok())
            .for_each(|micros| measured.record(Duration::from_micros(micros)));
    }
    let _ = std::fs::remove_dir_all(&log_dir);
    Ok(Summary {
        per_second: tps,
        ..Summary::of(&measured)
    })
}
