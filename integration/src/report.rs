//! What a suite run leaves for people and for CI: `junit.xml` (a testcase per scenario and per
//! invariant), `report.json` (everything, for scripts) and `report.html` (one self-contained page:
//! the table, the offending rows, and a chart per timed run with its faults marked).
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::Context;
use chrono::{DateTime, Utc};
use plotters::prelude::*;
use quick_junit::{NonSuccessKind, TestCase, TestCaseStatus, TestSuite};
use serde_json::{Value, json};

use crate::{progress::Timeline, suite::SuiteReport};

/// About the run as a whole.
pub struct RunInfo {
    pub seed: u64,
    /// The command that runs it again with the same seed.
    pub replay: String,
    /// `home-visits --version` of the spawned binary, when the harness spawned one.
    pub service_version: Option<String>,
    pub instances: Vec<String>,
    pub started_at: DateTime<Utc>,
    pub took: Duration,
    /// Scenarios `--scenario all` could not run against the instances it was given, and why.
    pub left_out: Vec<(&'static str, &'static str)>,
}

pub const HARNESS_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Fails now, before any load, if the reports could not be written at the end.
pub fn check_writable(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--report-dir {}", dir.display()))?;
    let probe = dir.join(".writable");
    std::fs::write(&probe, b"").with_context(|| format!("--report-dir {}", dir.display()))?;
    std::fs::remove_file(&probe).with_context(|| format!("--report-dir {}", dir.display()))?;
    Ok(())
}

/// Writes the three reports; returns their paths.
pub fn write(dir: &Path, suite: &SuiteReport, run: &RunInfo) -> anyhow::Result<Vec<PathBuf>> {
    let files = [
        ("junit.xml", junit(suite, run).to_string()?),
        (
            "report.json",
            serde_json::to_string_pretty(&json(suite, run))?,
        ),
        ("report.html", html(suite, run)?),
    ];
    files
        .into_iter()
        .map(|(name, contents)| {
            let path = dir.join(name);
            std::fs::write(&path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

pub fn junit(suite: &SuiteReport, run: &RunInfo) -> quick_junit::Report {
    let mut report = quick_junit::Report::new("home-visits harness");
    report.set_timestamp(run.started_at).set_time(run.took);

    let mut scenarios = TestSuite::new("scenarios");
    scenarios.add_property(("seed", run.seed.to_string().as_str()));
    scenarios.add_property(("replay", run.replay.as_str()));
    for scenario in &suite.scenarios {
        let status = if scenario.passed {
            TestCaseStatus::success()
        } else {
            let mut failure = TestCaseStatus::non_success(NonSuccessKind::Failure);
            failure
                .set_message(scenario.detail.as_str())
                .set_description(format!("{}\nreplay: {}", scenario.detail, run.replay));
            failure
        };
        let mut case = TestCase::new(scenario.name, status);
        case.set_classname("scenarios").set_time(scenario.elapsed);
        if scenario.passed {
            case.set_system_out(scenario.detail.as_str());
        }
        scenarios.add_test_case(case);
    }
    for (name, why) in &run.left_out {
        let mut skipped = TestCaseStatus::skipped();
        skipped.set_message(*why);
        let mut case = TestCase::new(*name, skipped);
        case.set_classname("scenarios");
        scenarios.add_test_case(case);
    }

    let mut invariants = TestSuite::new("invariants");
    for (name, count) in suite.invariants.counts() {
        let status = if count == 0 {
            TestCaseStatus::success()
        } else {
            let rows: Vec<String> = suite
                .offenders
                .iter()
                .filter(|offender| offender.invariant == name)
                .map(ToString::to_string)
                .collect();
            let mut failure = TestCaseStatus::non_success(NonSuccessKind::Failure);
            failure
                .set_message(format!("{name}: {count}"))
                .set_description(format!("{}\nreplay: {}", rows.join("\n"), run.replay));
            failure
        };
        let mut case = TestCase::new(name, status);
        case.set_classname("invariants");
        invariants.add_test_case(case);
    }
    report.add_test_suites([scenarios, invariants]);
    report
}

pub fn json(suite: &SuiteReport, run: &RunInfo) -> Value {
    json!({
        "passed": suite.passed(),
        "seed": run.seed,
        "replay": run.replay,
        "versions": { "harness": HARNESS_VERSION, "service": run.service_version },
        "instances": run.instances,
        "startedAt": run.started_at,
        "seconds": run.took.as_secs_f64(),
        "scenarios": suite.scenarios.iter().map(|scenario| json!({
            "name": scenario.name,
            "passed": scenario.passed,
            "detail": scenario.detail,
            "seconds": scenario.elapsed.as_secs_f64(),
            "outcomes": scenario.timeline.as_ref().map(Timeline::totals),
            "timeline": scenario.timeline,
        })).collect::<Vec<_>>(),
        "leftOut": run.left_out.iter().map(|(name, why)| json!({ "name": name, "why": why }))
            .collect::<Vec<_>>(),
        "invariants": {
            "clean": suite.invariants.is_clean(),
            "counts": suite.invariants.counts()
                .iter()
                .map(|(name, count)| (name.to_string(), json!(count)))
                .collect::<serde_json::Map<_, _>>(),
            "offenders": suite.offenders,
        },
    })
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:75em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;\
text-align:left;vertical-align:top}.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;\
font-weight:bold}code{background:#f4f4f4;padding:.1em .3em;word-break:break-all}\
.detail{font-size:.9em}figure{margin:1.5em 0}figcaption{font-size:.9em}";

pub fn html(suite: &SuiteReport, run: &RunInfo) -> anyhow::Result<String> {
    let verdict = |passed: bool| {
        if passed {
            r#"<span class="pass">PASS</span>"#
        } else {
            r#"<span class="fail">FAIL</span>"#
        }
    };
    let mut page = String::new();
    write!(
        page,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>home-visits harness: {}</title><style>{STYLE}</style></head><body>\
         <h1>home-visits harness {}</h1><p>{} instance(s): {}; seed {}; started {}, took {:.1} s; \
         harness {HARNESS_VERSION}, service {}.</p><p>Replay: <code>{}</code></p>",
        if suite.passed() { "passed" } else { "failed" },
        verdict(suite.passed()),
        run.instances.len(),
        escape(&run.instances.join(", ")),
        run.seed,
        run.started_at.format("%Y-%m-%d %H:%M:%S UTC"),
        run.took.as_secs_f64(),
        escape(
            run.service_version
                .as_deref()
                .unwrap_or("not spawned by the harness")
        ),
        escape(&run.replay),
    )?;
    page.push_str("<h2>Scenarios</h2><table><tr><th>scenario</th><th>result</th><th>time</th><th>detail</th></tr>");
    for scenario in &suite.scenarios {
        write!(
            page,
            "<tr><td>{}</td><td>{}</td><td>{:.1} s</td><td class=\"detail\">{}</td></tr>",
            scenario.name,
            verdict(scenario.passed),
            scenario.elapsed.as_secs_f64(),
            escape(&scenario.detail)
        )?;
    }
    for (name, why) in &run.left_out {
        write!(
            page,
            "<tr><td>{name}</td><td>left out</td><td></td><td class=\"detail\">{}</td></tr>",
            escape(why)
        )?;
    }
    page.push_str("</table><h2>Invariants (final)</h2><table><tr><th>invariant</th><th>result</th><th>rows</th></tr>");
    for (name, count) in suite.invariants.counts() {
        write!(
            page,
            "<tr><td>{name}</td><td>{}</td><td>{count}</td></tr>",
            verdict(count == 0)
        )?;
    }
    page.push_str("</table>");
    if !suite.offenders.is_empty() {
        page.push_str("<h3>Offending rows</h3><table><tr><th>invariant</th><th>row</th><th>expected</th><th>found</th></tr>");
        for offender in &suite.offenders {
            write!(
                page,
                "<tr><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                offender.invariant,
                escape(&offender.row),
                escape(&offender.expected),
                escape(&offender.found)
            )?;
        }
        page.push_str("</table>");
    }
    let timed: Vec<_> = suite
        .scenarios
        .iter()
        .filter_map(|scenario| Some((scenario.name, scenario.timeline.as_ref()?)))
        .filter(|(_, timeline)| !timeline.per_second.is_empty())
        .collect();
    if !timed.is_empty() {
        page.push_str("<h2>Timed runs</h2>");
    }
    for (name, timeline) in timed {
        write!(
            page,
            "<figure><h3>{name}</h3>{}<figcaption>Operations per second by outcome; faults marked \
             (numbered below).<ol>",
            chart(timeline)?
        )?;
        for fault in &timeline.faults {
            write!(
                page,
                "<li>{:.1} s: {}</li>",
                fault.at_seconds,
                escape(&fault.what)
            )?;
        }
        page.push_str("</ol></figcaption></figure>");
    }
    page.push_str("</body></html>\n");
    Ok(page)
}

pub(crate) fn drawing_error(error: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("drawing a chart: {error}")
}

/// Colours that stay apart on white: `ok` always green, errors in a fixed order.
fn colour(code: &str, index: usize) -> RGBColor {
    const OTHERS: [RGBColor; 7] = [
        RGBColor(207, 34, 46),
        RGBColor(9, 105, 218),
        RGBColor(191, 135, 0),
        RGBColor(130, 80, 223),
        RGBColor(27, 124, 131),
        RGBColor(100, 100, 100),
        RGBColor(219, 97, 162),
    ];
    if code == "ok" {
        RGBColor(26, 127, 55)
    } else {
        OTHERS[index % OTHERS.len()]
    }
}

/// An SVG line chart of outcomes per second, one line per code, a dashed line at each fault.
pub fn chart(timeline: &Timeline) -> anyhow::Result<String> {
    let codes: Vec<String> = timeline.totals().into_keys().collect();
    let seconds = timeline.per_second.len().max(1);
    let peak = timeline
        .per_second
        .iter()
        .flat_map(|second| second.values())
        .copied()
        .max()
        .unwrap_or(1)
        .max(1);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (760, 300)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing_error)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(32)
            .y_label_area_size(48)
            .build_cartesian_2d(0f64..seconds as f64, 0u64..peak + peak / 10 + 1)
            .map_err(drawing_error)?;
        chart
            .configure_mesh()
            .x_desc("seconds into the run")
            .y_desc("operations / s")
            .draw()
            .map_err(drawing_error)?;
        for (index, code) in codes.iter().enumerate() {
            let style = colour(code, index).stroke_width(2);
            let points = timeline
                .per_second
                .iter()
                .enumerate()
                .map(|(second, counts)| {
                    (second as f64 + 0.5, counts.get(code).copied().unwrap_or(0))
                });
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(drawing_error)?
                .label(code.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
        }
        for (number, fault) in timeline.faults.iter().enumerate() {
            let x = fault.at_seconds.min(seconds as f64);
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0), (x, peak)],
                    BLACK.mix(0.5).stroke_width(1),
                )))
                .map_err(drawing_error)?;
            chart
                .draw_series(std::iter::once(Text::new(
                    (number + 1).to_string(),
                    (x, peak + peak / 20),
                    ("sans-serif", 13),
                )))
                .map_err(drawing_error)?;
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

/// Everything in `html` that a browser would fetch from elsewhere: `src`/`href` attributes that
/// are not fragments or data, CSS `url(...)` and `@import`. A self-contained report has none.
pub fn external_references(html: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["src=", "href=", "url(", "@import"] {
        for (at, _) in html.match_indices(attribute) {
            let rest = html[at + attribute.len()..].trim_start_matches(['"', '\'', ' ']);
            if !(rest.starts_with('#') || rest.starts_with("data:")) {
                found.push(html[at..].chars().take(60).collect());
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use std::{collections::BTreeMap, time::Duration};

    use super::*;
    use crate::{
        invariants::{Offender, Violations},
        progress::{Fault, Timeline},
        suite::ScenarioReport,
    };

    fn failed_run() -> (SuiteReport, RunInfo) {
        let timeline = Timeline {
            planned_seconds: 2.0,
            per_second: vec![
                BTreeMap::from([("ok".to_string(), 40), ("CONFLICT".to_string(), 3)]),
                BTreeMap::from([("ok".to_string(), 12), ("TRANSPORT".to_string(), 5)]),
            ],
            faults: vec![Fault {
                at_seconds: 1.2,
                what: "kill -9 http://127.0.0.1:14002".into(),
            }],
        };
        let suite = SuiteReport {
            scenarios: vec![
                ScenarioReport {
                    name: "double-completion",
                    passed: true,
                    detail: "2 pals: 1 paid".into(),
                    elapsed: Duration::from_millis(400),
                    timeline: None,
                },
                ScenarioReport {
                    name: "minute-bank",
                    passed: false,
                    detail: "invariants broken: over-committed members: 1 <script>".into(),
                    elapsed: Duration::from_secs(2),
                    timeline: Some(timeline),
                },
            ],
            invariants: Violations {
                overcommitted_members: 1,
                ..Violations::default()
            },
            offenders: vec![Offender {
                invariant: "over-committed member",
                row: "member 5d0c1a8e-0000-4000-8000-000000000001".into(),
                expected: "outstanding <= balance 120".into(),
                found: "outstanding 160".into(),
            }],
        };
        let run = RunInfo {
            seed: 42,
            replay: "integration --scenario all --seed 42".into(),
            service_version: Some("home-visits 0.1.0".into()),
            instances: vec!["http://127.0.0.1:14001".into()],
            started_at: Utc::now(),
            took: Duration::from_secs(3),
            left_out: vec![("event-stream", "needs a broker")],
        };
        (suite, run)
    }

    #[test]
    fn the_junit_file_has_a_testcase_per_scenario_and_invariant_and_says_what_failed() {
        let (suite, run) = failed_run();
        let xml = junit(&suite, &run).to_string().expect("serializes");
        let parsed = quick_junit::Report::deserialize_from_str(&xml).expect("parses back");
        let cases: Vec<(String, bool)> = parsed
            .test_suites
            .iter()
            .flat_map(|suite| &suite.test_cases)
            .map(|case| {
                (
                    case.name.to_string(),
                    matches!(case.status, TestCaseStatus::Success { .. }),
                )
            })
            .collect();
        assert_eq!(cases.len(), 2 + 1 + 6, "{cases:?}");
        assert!(cases.contains(&("double-completion".into(), true)));
        assert!(cases.contains(&("event-stream".into(), false)));
        assert_eq!(
            parsed.test_suites[0].skipped, 1,
            "the left-out scenario is skipped"
        );
        assert!(cases.contains(&("minute-bank".into(), false)));
        assert!(cases.contains(&("over-committed member".into(), false)));
        assert!(cases.contains(&("negative balance".into(), true)));
        assert_eq!(parsed.failures, 2);
        assert!(
            xml.contains("member 5d0c1a8e-0000-4000-8000-000000000001"),
            "{xml}"
        );
        assert!(
            xml.contains("replay: integration --scenario all --seed 42"),
            "{xml}"
        );
    }

    #[test]
    fn the_page_stands_alone_and_escapes_what_it_shows() {
        let (suite, run) = failed_run();
        let page = html(&suite, &run).expect("renders");
        assert_eq!(external_references(&page), Vec::<String>::new());
        assert!(page.contains("<svg"), "a chart for the timed run");
        assert!(page.contains("kill -9 http://127.0.0.1:14002"));
        assert!(page.contains("&lt;script&gt;") && !page.contains("1 <script>"));
        assert!(page.contains("outstanding 160"));
    }

    #[test]
    fn the_self_containment_check_finds_what_a_browser_would_fetch() {
        let page = r##"<script src="https://cdn.example/x.js"></script><a href="#top">top</a>
            <img src="data:image/png;base64,AA"><style>@import "a.css"; b{background:url(b.png)}</style>"##;
        let found = external_references(page);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("cdn.example"));
    }

    #[test]
    fn the_json_report_carries_the_seed_the_replay_and_the_offenders() {
        let (suite, run) = failed_run();
        let report = json(&suite, &run);
        assert_eq!(report["passed"], false);
        assert_eq!(report["seed"], 42);
        assert_eq!(report["replay"], "integration --scenario all --seed 42");
        assert_eq!(report["scenarios"][1]["outcomes"]["ok"], 52);
        assert_eq!(report["invariants"]["counts"]["over-committed member"], 1);
        assert_eq!(
            report["invariants"]["offenders"][0]["row"],
            "member 5d0c1a8e-0000-4000-8000-000000000001"
        );
    }
}
