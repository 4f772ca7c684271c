//! What the harness is doing while it does it, and the timeline a report draws afterwards.
//!
//! Workers record every outcome and fault injectors every fault here; a ticker shows them: a
//! redrawn bar on a terminal, a plain line at least every [`PLAIN_EVERY`] otherwise (CI logs keep
//! every line, so a redrawn bar would fill them with frames). Faults are printed as they happen.
use std::{
    collections::BTreeMap,
    io::IsTerminal,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

/// How often a plain progress line is printed when stdout is not a terminal.
pub const PLAIN_EVERY: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(250);

/// One fault, when it happened in the scenario's timed run.
#[derive(Debug, Clone, Serialize)]
pub struct Fault {
    pub at_seconds: f64,
    pub what: String,
}

/// A scenario's timed runs: outcomes per second (by code, `ok` for successes) and the faults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timeline {
    pub planned_seconds: f64,
    pub per_second: Vec<BTreeMap<String, u64>>,
    pub faults: Vec<Fault>,
}

impl Timeline {
    /// Outcomes by code over the whole run.
    pub fn totals(&self) -> BTreeMap<String, u64> {
        let mut totals = BTreeMap::new();
        for second in &self.per_second {
            for (code, count) in second {
                *totals.entry(code.clone()).or_default() += count;
            }
        }
        totals
    }

    fn operations(&self) -> u64 {
        self.per_second
            .iter()
            .flat_map(|second| second.values())
            .sum()
    }
}

#[derive(Default)]
struct State {
    /// Set by the first timed run of the current scenario: its clock starts there.
    started: Option<Instant>,
    timeline: Timeline,
    unprinted_faults: Vec<String>,
}

/// Shared by the harness, its workers and fault injectors, and the ticker.
#[derive(Default)]
pub struct Progress {
    state: Mutex<State>,
}

impl Progress {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking worker must not take progress down with it: the data is only counters.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A timed run of `planned` starts (a scenario may have several: their times add up).
    pub fn begin_run(&self, planned: Duration) {
        let mut state = self.state();
        state.started.get_or_insert_with(Instant::now);
        state.timeline.planned_seconds += planned.as_secs_f64();
    }

    /// When the current scenario's first timed run began, if it has.
    pub fn run_started(&self) -> Option<Instant> {
        self.state().started
    }

    /// One operation ended with `code` (`ok` for a success).
    pub fn record(&self, code: &str) {
        let mut state = self.state();
        let Some(started) = state.started else { return };
        let second = started.elapsed().as_secs() as usize;
        let seconds = &mut state.timeline.per_second;
        if seconds.len() <= second {
            seconds.resize_with(second + 1, BTreeMap::new);
        }
        *seconds[second].entry(code.to_string()).or_default() += 1;
    }

    /// Records a fault as it is injected; returns it as the fault log's line (`what at 1.3s`).
    pub fn fault(&self, what: impl Into<String>) -> String {
        let what = what.into();
        let mut state = self.state();
        let at_seconds = state
            .started
            .map_or(0.0, |started| started.elapsed().as_secs_f64());
        let line = format!("{what} at {at_seconds:.1}s");
        state.unprinted_faults.push(line.clone());
        state.timeline.faults.push(Fault { at_seconds, what });
        line
    }

    /// The current scenario's timeline, leaving an empty one for the next.
    pub fn take_timeline(&self) -> Option<Timeline> {
        let mut state = self.state();
        let had_run = state.started.take().is_some();
        state.unprinted_faults.clear();
        let timeline = std::mem::take(&mut state.timeline);
        had_run.then_some(timeline)
    }

    /// (elapsed, planned, operations, outcomes so far), and the faults not printed yet.
    fn snapshot(&self) -> (Option<Snapshot>, Vec<String>) {
        let mut state = self.state();
        let faults = std::mem::take(&mut state.unprinted_faults);
        let snapshot = state.started.map(|started| Snapshot {
            elapsed: started.elapsed(),
            planned: Duration::from_secs_f64(state.timeline.planned_seconds),
            operations: state.timeline.operations(),
            outcomes: state.timeline.totals(),
        });
        (snapshot, faults)
    }
}

struct Snapshot {
    elapsed: Duration,
    planned: Duration,
    operations: u64,
    outcomes: BTreeMap<String, u64>,
}

impl Snapshot {
    fn outcomes(&self) -> String {
        self.outcomes
            .iter()
            .map(|(code, count)| format!("{code} {count}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Shows one scenario's progress until dropped.
pub struct Ticker {
    task: tokio::task::JoinHandle<()>,
    bar: Option<ProgressBar>,
    progress: Arc<Progress>,
}

impl Ticker {
    pub fn start(progress: Arc<Progress>, label: String) -> Self {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout());
            bar.enable_steady_tick(TICK);
            bar.set_style(
                ProgressStyle::with_template("{prefix:.bold} {spinner} [{bar:24}] {wide_msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar.set_prefix(label.clone());
            bar
        });
        if bar.is_none() {
            println!("{label} ...");
        }
        let shown = bar.clone();
        let watched = progress.clone();
        let task = tokio::spawn(async move {
            let mut last_line = Instant::now();
            loop {
                tokio::time::sleep(TICK).await;
                let (snapshot, faults) = watched.snapshot();
                print_faults(shown.as_ref(), faults);
                let Some(snapshot) = snapshot else { continue };
                // A scenario may do more than load (a rebuild, a drain): its time can pass the
                // load's, so the two are shown apart.
                let line = format!(
                    "{:.0}s in ({:.0}s of load), {} operations ({})",
                    snapshot.elapsed.as_secs_f64(),
                    snapshot.planned.as_secs_f64(),
                    snapshot.operations,
                    snapshot.outcomes()
                );
                match &shown {
                    Some(bar) => {
                        let planned = snapshot.planned.as_millis().max(1) as u64;
                        bar.set_length(planned);
                        bar.set_position((snapshot.elapsed.as_millis() as u64).min(planned));
                        bar.set_message(line);
                    }
                    None if last_line.elapsed() >= PLAIN_EVERY => {
                        println!("  {label}: {line}");
                        last_line = Instant::now();
                    }
                    None => {}
                }
            }
        });
        Self {
            task,
            bar,
            progress,
        }
    }
}

fn print_faults(bar: Option<&ProgressBar>, faults: Vec<String>) {
    for fault in faults {
        match bar {
            Some(bar) => bar.println(format!("  fault: {fault}")),
            None => println!("  fault: {fault}"),
        }
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.task.abort();
        // A fault injected in the last tick would otherwise go unseen.
        print_faults(self.bar.as_ref(), self.progress.snapshot().1);
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
