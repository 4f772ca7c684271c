//! The command that replays a run: the same flags, with the seed it used pinned.
//!
//! The seed fixes what every worker does and in which order; the interleaving across instances is
//! the machine's, so a replay reproduces the workload, and a race it provoked as often as the
//! original did.

/// `args` (the program first) with `--seed` set to `seed`, quoted for a POSIX shell.
pub fn command(args: impl IntoIterator<Item = String>, seed: u64) -> String {
    let mut args = args.into_iter();
    let mut kept: Vec<String> = args.next().into_iter().collect();
    while let Some(arg) = args.next() {
        if arg == "--seed" {
            args.next();
        } else if !arg.starts_with("--seed=") {
            kept.push(arg);
        }
    }
    kept.push("--seed".into());
    kept.push(seed.to_string());
    kept.iter()
        .map(|arg| quoted(arg))
        .collect::<Vec<_>>()
        .join(" ")
}

fn quoted(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::command;

    fn args(line: &[&str]) -> Vec<String> {
        line.iter().map(|arg| arg.to_string()).collect()
    }

    #[test]
    fn the_seed_is_pinned_whether_it_was_given_or_not() {
        assert_eq!(
            command(args(&["integration", "--seconds", "5"]), 42),
            "integration --seconds 5 --seed 42"
        );
        assert_eq!(
            command(
                args(&[
                    "integration",
                    "--seed",
                    "7",
                    "--scenario",
                    "minute-bank",
                    "--seed=8"
                ]),
                7
            ),
            "integration --scenario minute-bank --seed 7"
        );
    }

    #[test]
    fn arguments_a_shell_would_split_are_quoted() {
        assert_eq!(
            command(args(&["integration", "--report-dir", "my report's dir"]), 1),
            r"integration --report-dir 'my report'\''s dir' --seed 1"
        );
    }
}
