//! The bench's printed report: the table of medians and ratios, and the CPU spent per call.
use std::{collections::BTreeMap, time::Duration};

use super::{stats::Summary, workloads::Workload};
use crate::cpu::Reading;

pub fn print_header() {
    println!(
        "{:<13} {:>9} {:>8} {:>8} {:>8}  {:>10} {:>8} {:>8}  {:>6} {:>9}  {:<16} errors",
        "workload",
        "req/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "pgbench/s",
        "p50 ms",
        "p99 ms",
        "ratio",
        "p99 ratio",
        "ratio per round"
    );
}

/// What the service's rounds are compared with: pgbench's rounds, or a computed bound.
pub enum Reference<'a> {
    Pgbench(&'a [Summary]),
    /// Calls per second the machine could do at best (login: cores / one Argon2id verification).
    Bound {
        per_second: f64,
        detail: String,
    },
    None,
}

pub fn print_row(
    workload: Workload,
    service_rounds: &[Summary],
    reference: Reference<'_>,
    errors: &BTreeMap<String, u64>,
) {
    let service = Summary::median(service_rounds);
    let ratios = |per_second: &dyn Fn(usize) -> f64| {
        service_rounds
            .iter()
            .enumerate()
            .map(|(index, ours)| format!("{:.2}", ours.per_second / per_second(index)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let (reference_columns, ratio, p99_ratio, round_ratios) = match reference {
        Reference::Pgbench(rounds) if !rounds.is_empty() => {
            let pg = Summary::median(rounds);
            (
                format!(
                    "{:>10.0} {:>8} {:>8}",
                    pg.per_second,
                    millis(pg.p50),
                    millis(pg.p99)
                ),
                format!("{:.2}", service.per_second / pg.per_second),
                format!(
                    "{:.2}",
                    service.p99.as_secs_f64() / pg.p99.as_secs_f64().max(1e-9)
                ),
                ratios(&|index| rounds.get(index).map_or(f64::NAN, |round| round.per_second)),
            )
        }
        Reference::Bound { per_second, detail } => (
            format!("{per_second:>10.0} {detail:>17}"),
            format!("{:.2}", service.per_second / per_second),
            "-".to_string(),
            ratios(&|_| per_second),
        ),
        _ => (
            format!("{:>10} {:>8} {:>8}", "-", "-", "-"),
            "-".to_string(),
            "-".to_string(),
            "-".to_string(),
        ),
    };
    println!(
        "{:<13} {:>9.0} {:>8} {:>8} {:>8}  {reference_columns}  {:>6} {:>9}  {:<16} {}",
        workload.name(),
        service.per_second,
        millis(service.p50),
        millis(service.p95),
        millis(service.p99),
        ratio,
        p99_ratio,
        round_ratios,
        errors_text(errors)
    );
}

pub fn print_cpu_table(lines: &[String]) {
    println!(
        "\nCPU per call, µs    {:>9} {:>9} {:>9} {:>7}   {:>17} {:>7} {:>7}",
        "instances", "postgres", "load gen", "total", "pgbench: postgres", "client", "total"
    );
    for line in lines {
        println!("{line}");
    }
    println!();
}

/// One row of the CPU table: what each party spent per call, summed over a workload's rounds.
pub fn cpu_line(
    workload: Workload,
    service: &Reading,
    calls: u64,
    reference: &Reading,
    transactions: u64,
) -> String {
    let per = |spent: Duration, count: u64| spent.as_secs_f64() * 1e6 / count.max(1) as f64;
    let ours = format!(
        "{:<19} {:>9.0} {:>9.0} {:>9.0} {:>7.0}",
        workload.name(),
        per(service.instances, calls),
        per(service.server, calls),
        per(service.this_process, calls),
        per(
            service.instances + service.server + service.this_process,
            calls
        ),
    );
    if transactions == 0 {
        return ours;
    }
    format!(
        "{ours}   {:>17.0} {:>7.0} {:>7.0}",
        per(reference.server, transactions),
        per(reference.finished_children, transactions),
        per(reference.server + reference.finished_children, transactions),
    )
}

fn errors_text(errors: &BTreeMap<String, u64>) -> String {
    if errors.is_empty() {
        return "-".into();
    }
    errors
        .iter()
        .map(|(code, count)| format!("{code}:{count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn millis(duration: Duration) -> String {
    format!("{:.1}", duration.as_secs_f64() * 1000.0)
}
