//! Bad flags end the harness before any load: one line naming the flag, exit code 2.
use std::process::{Command, Output};

fn harness(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_integration"))
        .args(args)
        .output()
        .expect("the harness runs")
}

fn refused(args: &[&str], flag: &str) {
    let output = harness(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
    assert!(
        stderr.contains(flag),
        "{args:?} should name {flag}: {stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "{args:?}: one line, not {stderr}"
    );
    assert!(
        output.stdout.is_empty(),
        "{args:?}: nothing started: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}

#[test]
fn an_unknown_scenario_is_refused_by_name() {
    refused(&["--scenario", "minute-bnak"], "--scenario");
}

#[test]
fn an_unwritable_report_dir_is_refused_before_the_run() {
    // A directory cannot be made under a regular file, whoever runs the test.
    let file = std::env::temp_dir().join(format!("harness-cli-{}", std::process::id()));
    std::fs::write(&file, b"").expect("temp file");
    let dir = file.join("reports");
    refused(
        &[
            "--scenario",
            "minute-bank",
            "--report-dir",
            dir.to_str().expect("utf-8"),
        ],
        "--report-dir",
    );
    std::fs::remove_file(&file).ok();
}

#[test]
fn an_instance_that_answers_nothing_is_refused() {
    // Port 9 (discard) has no listener on a test machine: the connection is refused at once.
    refused(
        &[
            "--instance",
            "http://127.0.0.1:9",
            "--database-url",
            "postgres://nobody@127.0.0.1:9/none",
        ],
        "--instance http://127.0.0.1:9",
    );
}

#[test]
fn an_unknown_bench_workload_is_refused() {
    let output = harness(&["bench", "--workload", "requset"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--workload"));
}
