//! The binary's command line: every command listed, anything else refused with clap's usage.
use std::process::{Command, Output};

fn home_visits(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_home-visits"))
        .args(args)
        .output()
        .expect("the binary runs")
}

#[test]
fn help_lists_every_command() {
    let help = home_visits(&["--help"]);
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    for command in ["serve", "migrate", "schema", "version", "db", "events"] {
        assert!(
            text.lines()
                .any(|line| line.trim_start().starts_with(&format!("{command} "))),
            "`{command}` missing from:\n{text}"
        );
    }
    let events = home_visits(&["events", "--help"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(
        text.contains("tail") && text.contains("dead-letters"),
        "{text}"
    );
}

#[test]
fn an_unknown_command_or_flag_exits_2_with_the_usage() {
    for args in [
        &["frobnicate"][..],
        &["events", "tail", "--form", "3"],
        &["db"],
    ] {
        let refused = home_visits(args);
        assert_eq!(refused.status.code(), Some(2), "{args:?}");
        let said = String::from_utf8_lossy(&refused.stderr);
        assert!(said.contains("Usage: home-visits"), "{args:?}: {said}");
    }
}

#[test]
fn a_setting_the_service_cannot_work_with_is_refused_at_start_by_name() {
    let refused = Command::new(env!("CARGO_BIN_EXE_home-visits"))
        .arg("migrate")
        .env("DATABASE_POOL_SIZE", "0")
        .output()
        .expect("the binary runs");
    assert_eq!(refused.status.code(), Some(1));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("DATABASE_POOL_SIZE has an invalid value"),
        "{said}"
    );
}
