//! The bench's kept report: `bench.json` (every round's figures) and `bench.html` (one
//! self-contained page: throughput and latency per workload beside pgbench, per round, and the CPU
//! each party spent per call as stacked bars).
use std::{fmt::Write as _, path::Path, time::Duration};

use anyhow::Context;
use plotters::{coord::Shift, prelude::*};
use serde::Serialize;

use super::stats::Summary;
use crate::{cpu::Reading, report::drawing_error};

/// One side of one round.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    pub per_second: f64,
    pub calls: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
}

impl From<&Summary> for Round {
    fn from(summary: &Summary) -> Self {
        let ms = |duration: Duration| duration.as_secs_f64() * 1e3;
        Self {
            per_second: summary.per_second,
            calls: summary.count,
            p50_ms: ms(summary.p50),
            p95_ms: ms(summary.p95),
            p99_ms: ms(summary.p99),
        }
    }
}

/// Microseconds of CPU per call, by party.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuPerCall {
    pub instances: f64,
    pub postgres: f64,
    pub load_generator: f64,
}

impl CpuPerCall {
    pub fn of(reading: &Reading, calls: u64) -> Self {
        let per = |spent: Duration| spent.as_secs_f64() * 1e6 / calls.max(1) as f64;
        Self {
            instances: per(reading.instances),
            postgres: per(reading.server),
            load_generator: per(reading.this_process),
        }
    }

    /// pgbench's side: the server, and pgbench itself (a finished child of this process).
    pub fn of_pgbench(reading: &Reading, transactions: u64) -> Self {
        let per = |spent: Duration| spent.as_secs_f64() * 1e6 / transactions.max(1) as f64;
        Self {
            instances: 0.0,
            postgres: per(reading.server),
            load_generator: per(reading.finished_children),
        }
    }

    fn total(&self) -> f64 {
        self.instances + self.postgres + self.load_generator
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct WorkloadRecord {
    pub name: &'static str,
    pub service: Vec<Round>,
    pub pgbench: Vec<Round>,
    pub cpu: Option<CpuPerCall>,
    pub pgbench_cpu: Option<CpuPerCall>,
    pub errors: std::collections::BTreeMap<String, u64>,
}

impl WorkloadRecord {
    fn median(rounds: &[Round], pick: impl Fn(&Round) -> f64) -> Option<f64> {
        let mut values: Vec<f64> = rounds.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BenchRecord {
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub instances: usize,
    pub clients: usize,
    pub seconds_per_round: u64,
    pub rounds: u32,
    pub cores: usize,
    pub workloads: Vec<WorkloadRecord>,
}

/// `bench.json`, `bench.html`, and each chart alone as `bench-{throughput,latency,cpu}.svg` (for
/// a README to show).
pub fn write(dir: &Path, record: &BenchRecord) -> anyhow::Result<()> {
    let charts = [
        ("bench-throughput.svg", throughput_chart(record)?),
        ("bench-latency.svg", latency_chart(record)?),
        ("bench-cpu.svg", cpu_chart(record)?),
    ];
    let mut files = vec![
        (
            "bench.json".to_string(),
            serde_json::to_string_pretty(record)?,
        ),
        ("bench.html".to_string(), page(&charts, record)?),
    ];
    files.extend(
        charts
            .iter()
            .map(|(name, svg)| (name.to_string(), format!("{svg}\n"))),
    );
    let mut written = Vec::new();
    for (name, contents) in files {
        let path = dir.join(name);
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        written.push(path.display().to_string());
    }
    println!("reports: {}", written.join(", "));
    Ok(())
}

const SERVICE: RGBColor = RGBColor(9, 105, 218);
const SERVICE_LIGHT: RGBColor = RGBColor(128, 178, 240);
const PGBENCH: RGBColor = RGBColor(191, 135, 0);
const PGBENCH_LIGHT: RGBColor = RGBColor(230, 200, 120);
const PARTIES: [(&str, RGBColor); 3] = [
    ("instances", RGBColor(9, 105, 218)),
    ("PostgreSQL", RGBColor(26, 127, 55)),
    ("load generator / pgbench", RGBColor(150, 150, 150)),
];

/// Grouped bars (one group per workload, one bar per series) with each round as a dot on its bar.
fn grouped_bars(
    title: &str,
    unit: &str,
    groups: &[&str],
    series: &[(&str, RGBColor, Vec<Vec<f64>>)],
) -> anyhow::Result<String> {
    let peak = series
        .iter()
        .flat_map(|(_, _, values)| values.iter().flatten())
        .copied()
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 320)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let labels = groups.to_vec();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..groups.len() as f64, 0f64..peak * 1.15)
            .map_err(drawing_error)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let index = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 1e-6 {
                    labels
                        .get(index)
                        .map_or_else(String::new, |label| label.to_string())
                } else {
                    String::new()
                }
            })
            .y_desc(unit)
            .draw()
            .map_err(drawing_error)?;
        let width = 0.8 / series.len().max(1) as f64;
        for (index, (name, colour, values)) in series.iter().enumerate() {
            let colour = *colour;
            let bars = values.iter().enumerate().filter_map(|(group, rounds)| {
                let mut sorted = rounds.clone();
                sorted.sort_by(f64::total_cmp);
                let median = *sorted.get(sorted.len() / 2)?;
                let left = group as f64 + 0.1 + width * index as f64;
                Some(Rectangle::new(
                    [(left, 0.0), (left + width * 0.9, median)],
                    colour.mix(0.75).filled(),
                ))
            });
            chart
                .draw_series(bars)
                .map_err(drawing_error)?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled())
                });
            let dots = values.iter().enumerate().flat_map(|(group, rounds)| {
                let centre = group as f64 + 0.1 + width * (index as f64 + 0.45);
                rounds
                    .iter()
                    .map(move |value| Circle::new((centre, *value), 3, BLACK.filled()))
            });
            chart.draw_series(dots).map_err(drawing_error)?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.3))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(drawing_error)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

/// Stacked bars of CPU per call: for each workload the service's parties, then pgbench's.
pub fn cpu_chart(record: &BenchRecord) -> anyhow::Result<String> {
    let mut bars: Vec<(String, CpuPerCall)> = Vec::new();
    for workload in &record.workloads {
        if let Some(cpu) = workload.cpu {
            bars.push((workload.name.to_string(), cpu));
        }
        if let Some(cpu) = workload.pgbench_cpu {
            bars.push((format!("{} pgbench", workload.name), cpu));
        }
    }
    let peak = bars
        .iter()
        .map(|(_, cpu)| cpu.total())
        .fold(0.0_f64, f64::max)
        .max(1e-9);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 340)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        draw_stacked(&root, &bars, peak)?;
        root.present().map_err(drawing_error)?;
    }
    Ok(svg)
}

fn draw_stacked(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    bars: &[(String, CpuPerCall)],
    peak: f64,
) -> anyhow::Result<()> {
    let labels: Vec<String> = bars.iter().map(|(label, _)| label.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption("CPU per call by party (µs)", ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(32)
        .y_label_area_size(56)
        .build_cartesian_2d(0f64..bars.len().max(1) as f64, 0f64..peak * 1.15)
        .map_err(drawing_error)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(bars.len() * 2 + 1)
        .x_label_formatter(&|x| {
            if (x - x.floor() - 0.5).abs() < 1e-6 {
                labels.get(x.floor() as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs of CPU per call")
        .draw()
        .map_err(drawing_error)?;
    for (party, (name, colour)) in PARTIES.iter().enumerate() {
        let colour = *colour;
        let segments = bars.iter().enumerate().map(|(index, (_, cpu))| {
            let parts = [cpu.instances, cpu.postgres, cpu.load_generator];
            let bottom: f64 = parts[..party].iter().sum();
            let left = index as f64 + 0.15;
            Rectangle::new(
                [(left, bottom), (left + 0.7, bottom + parts[party])],
                colour.mix(0.8).filled(),
            )
        });
        chart
            .draw_series(segments)
            .map_err(drawing_error)?
            .label(*name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(drawing_error)?;
    Ok(())
}

/// Throughput per workload, the service beside pgbench; each round a dot on its bar.
pub fn throughput_chart(record: &BenchRecord) -> anyhow::Result<String> {
    let names: Vec<&str> = record.workloads.iter().map(|w| w.name).collect();
    let rounds = |pick: fn(&WorkloadRecord) -> &Vec<Round>| {
        record
            .workloads
            .iter()
            .map(|workload| {
                pick(workload)
                    .iter()
                    .map(|round| round.per_second)
                    .collect()
            })
            .collect::<Vec<Vec<f64>>>()
    };
    grouped_bars(
        "Throughput: the service beside pgbench on the same statements",
        "calls / s",
        &names,
        &[
            ("home-visits (2 instances)", SERVICE, rounds(|w| &w.service)),
            ("pgbench", PGBENCH, rounds(|w| &w.pgbench)),
        ],
    )
}

fn latency_chart(record: &BenchRecord) -> anyhow::Result<String> {
    let names: Vec<&str> = record.workloads.iter().map(|w| w.name).collect();
    let pick = |side: fn(&WorkloadRecord) -> &Vec<Round>, latency: fn(&Round) -> f64| {
        record
            .workloads
            .iter()
            .map(|workload| side(workload).iter().map(latency).collect())
            .collect::<Vec<Vec<f64>>>()
    };
    grouped_bars(
        "Latency: p50 and p99",
        "ms",
        &names,
        &[
            (
                "service p50",
                SERVICE_LIGHT,
                pick(|w| &w.service, |r| r.p50_ms),
            ),
            ("service p99", SERVICE, pick(|w| &w.service, |r| r.p99_ms)),
            (
                "pgbench p50",
                PGBENCH_LIGHT,
                pick(|w| &w.pgbench, |r| r.p50_ms),
            ),
            ("pgbench p99", PGBENCH, pick(|w| &w.pgbench, |r| r.p99_ms)),
        ],
    )
}

fn page(charts: &[(&str, String)], record: &BenchRecord) -> anyhow::Result<String> {
    let mut page = String::new();
    write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>home-visits bench</title>\
         <style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:.3em .6em;\
         text-align:right}}td:first-child,th:first-child{{text-align:left}}</style></head><body>\
         <h1>home-visits bench</h1><p>{} instance(s), {} clients, {} round(s) of {} s per workload, \
         {} cores; started {}.</p><table><tr><th>workload</th><th>calls/s</th><th>p50 ms</th>\
         <th>p99 ms</th><th>pgbench/s</th><th>pgbench p99 ms</th><th>ratio</th><th>CPU µs/call</th>\
         <th>pgbench CPU µs/tx</th></tr>",
        record.instances,
        record.clients,
        record.rounds,
        record.seconds_per_round,
        record.cores,
        record.started_at.format("%Y-%m-%d %H:%M UTC"),
    )?;
    let cell = |value: Option<f64>, digits: usize| {
        value.map_or_else(|| "-".to_string(), |value| format!("{value:.digits$}"))
    };
    for workload in &record.workloads {
        let ours = WorkloadRecord::median(&workload.service, |r| r.per_second);
        let theirs = WorkloadRecord::median(&workload.pgbench, |r| r.per_second);
        write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            workload.name,
            cell(ours, 0),
            cell(WorkloadRecord::median(&workload.service, |r| r.p50_ms), 1),
            cell(WorkloadRecord::median(&workload.service, |r| r.p99_ms), 1),
            cell(theirs, 0),
            cell(WorkloadRecord::median(&workload.pgbench, |r| r.p99_ms), 1),
            cell(ours.zip(theirs).map(|(ours, theirs)| ours / theirs), 2),
            cell(workload.cpu.map(|cpu| cpu.total()), 0),
            cell(workload.pgbench_cpu.map(|cpu| cpu.total()), 0),
        )?;
    }
    page.push_str("</table>");
    for (_, chart) in charts {
        write!(page, "<figure>{chart}</figure>")?;
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> BenchRecord {
        let round = |per_second: f64, p99_ms: f64| Round {
            per_second,
            calls: (per_second * 5.0) as u64,
            p50_ms: p99_ms / 4.0,
            p95_ms: p99_ms / 2.0,
            p99_ms,
        };
        BenchRecord {
            started_at: chrono::Utc::now(),
            instances: 2,
            clients: 32,
            seconds_per_round: 5,
            rounds: 3,
            cores: 2,
            workloads: vec![WorkloadRecord {
                name: "request",
                service: vec![round(800.0, 70.0), round(840.0, 60.0), round(790.0, 75.0)],
                pgbench: vec![
                    round(2000.0, 30.0),
                    round(2100.0, 28.0),
                    round(1900.0, 35.0),
                ],
                cpu: Some(CpuPerCall {
                    instances: 1600.0,
                    postgres: 520.0,
                    load_generator: 200.0,
                }),
                pgbench_cpu: Some(CpuPerCall {
                    instances: 0.0,
                    postgres: 480.0,
                    load_generator: 90.0,
                }),
                errors: Default::default(),
            }],
        }
    }

    #[test]
    fn the_page_has_the_table_and_three_self_contained_charts() {
        let record = record();
        let charts = [
            ("throughput", throughput_chart(&record).expect("draws")),
            ("latency", latency_chart(&record).expect("draws")),
            ("cpu", cpu_chart(&record).expect("draws")),
        ];
        let html = page(&charts, &record).expect("renders");
        assert_eq!(html.matches("<svg").count(), 3);
        assert_eq!(
            crate::report::external_references(&html),
            Vec::<String>::new()
        );
        // The median round of each side, and their ratio.
        assert!(html.contains("<td>request</td><td>800</td>"), "{html}");
        assert!(html.contains("<td>2000</td>"));
        assert!(html.contains("<td>0.40</td>"));
    }
}
