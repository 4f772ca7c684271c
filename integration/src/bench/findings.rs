//! What the bench measured of each workload, and what its report prints, gathered workload by
//! workload.
use std::collections::BTreeMap;

use super::{
    BenchOptions, argon2_verify_time, charts,
    report::{self, Reference},
    sessions,
    stats::{Measurement, Summary},
    workloads::Workload,
};
use crate::cpu::Reading;

/// One workload's rounds, as measured.
pub struct Measured {
    pub(super) service_rounds: Vec<Summary>,
    pub(super) reference_rounds: Vec<Summary>,
    pub(super) errors: BTreeMap<String, u64>,
    pub(super) service_cpu: Reading,
    pub(super) reference_cpu: Reading,
    pub(super) by_session: sessions::BySession,
    pub(super) side_cpu: super::beside::SideTime,
    pub(super) delivered: Measurement,
    pub(super) event_lines: Vec<String>,
}

/// What the report prints, gathered workload by workload.
pub struct Findings {
    pub(super) record: charts::BenchRecord,
    pub(super) live_lines: Vec<String>,
    /// Deliveries per second in each workload.
    pub(super) delivery_rate_lines: Vec<String>,
    /// The live feed and its deliveries measured alone (see `Stand::probe_deliveries`).
    pub(super) probe_line: Option<String>,
    pub(super) cpu_lines: Vec<String>,
    pub(super) session_lines: Vec<String>,
    /// The standby's and the pooler's CPU per call, when the stand has them.
    pub(super) side_lines: Vec<String>,
    pub(super) event_lines: Vec<String>,
    pub scale_lines: Vec<String>,
    /// Runs so far (pgbench numbers its log files by it).
    pub run: u32,
}

impl Findings {
    pub fn new(options: &BenchOptions, cores: usize) -> Self {
        Self {
            record: charts::BenchRecord {
                started_at: chrono::Utc::now(),
                instances: options.instance_ports.len(),
                clients: options.clients,
                seconds_per_round: options.duration.as_secs().max(1),
                rounds: options.rounds,
                cores,
                workloads: Vec::new(),
            },
            live_lines: Vec::new(),
            delivery_rate_lines: Vec::new(),
            probe_line: None,
            cpu_lines: Vec::new(),
            session_lines: Vec::new(),
            side_lines: Vec::new(),
            event_lines: Vec::new(),
            scale_lines: Vec::new(),
            run: 0,
        }
    }

    /// One workload's figures: its row (printed now), and its lines and charts for the report.
    pub fn add(
        &mut self,
        options: &BenchOptions,
        workload: Workload,
        measured: Measured,
        metered: bool,
    ) -> anyhow::Result<()> {
        let Measured {
            service_rounds,
            reference_rounds,
            errors,
            service_cpu,
            reference_cpu,
            by_session,
            side_cpu,
            delivered,
            event_lines,
        } = measured;
        self.event_lines.extend(event_lines);
        let calls = service_rounds.iter().map(|round| round.count).sum();
        let transactions = reference_rounds.iter().map(|round| round.count).sum();
        self.cpu_lines.push(report::cpu_line(
            workload,
            &service_cpu,
            calls,
            &reference_cpu,
            transactions,
        ));
        self.session_lines
            .push(by_session.line(workload.name(), service_cpu.server, calls));
        let per_call = |spent: std::time::Duration| spent.as_secs_f64() * 1e6 / calls.max(1) as f64;
        self.side_lines.push(format!(
            "  {:<19} standby {:>7.0}   PgBouncer {:>7.0}",
            workload.name(),
            per_call(side_cpu.standby),
            per_call(side_cpu.pooler),
        ));
        self.record.workloads.push(charts::WorkloadRecord {
            name: workload.name(),
            service: service_rounds.iter().map(charts::Round::from).collect(),
            pgbench: reference_rounds.iter().map(charts::Round::from).collect(),
            cpu: metered.then(|| charts::CpuPerCall::of(&service_cpu, calls)),
            pgbench_cpu: (metered && transactions > 0)
                .then(|| charts::CpuPerCall::of_pgbench(&reference_cpu, transactions)),
            errors: errors.clone(),
        });
        let reference = if !reference_rounds.is_empty() {
            Reference::Pgbench(&reference_rounds)
        } else if workload == Workload::Login {
            let verify = argon2_verify_time()?;
            Reference::Bound {
                per_second: self.record.cores as f64 / verify.as_secs_f64(),
                detail: format!("{} ms argon2", report::millis(verify)),
            }
        } else {
            Reference::None
        };
        report::print_row(workload, &service_rounds, reference, &errors);
        if options.subscribers > 0 {
            self.live_lines.push(format!(
                "  {:<14} {:>8} deliveries  p50 {:>6.1} ms  p99 {:>6.1} ms",
                workload.name(),
                delivered.successes(),
                delivered.percentile(0.5).as_secs_f64() * 1e3,
                delivered.percentile(0.99).as_secs_f64() * 1e3,
            ));
            let seconds = options.duration.as_secs_f64() * service_rounds.len().max(1) as f64;
            self.delivery_rate_lines.push(format!(
                "  {:<14} {:>8.0} deliveries/s",
                workload.name(),
                delivered.successes() as f64 / seconds,
            ));
        }
        Ok(())
    }
}
