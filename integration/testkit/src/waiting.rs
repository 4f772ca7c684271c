//! Waiting for something to become true, with a deadline and a message: never a bare sleep.
use std::{future::Future, time::Duration};

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(20);

/// Runs `check` until it gives `Some`, looking again every 20 ms, for at most `deadline`. The
/// `Err` names `what` was awaited, for a report.
pub async fn within<T, Check, Looked>(
    deadline: Duration,
    what: &str,
    mut check: Check,
) -> Result<T, String>
where
    Check: FnMut() -> Looked,
    Looked: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(found) = check().await {
            return Ok(found);
        }
        if tokio::time::Instant::now() >= until {
            return Err(format!("{what}: not within {deadline:?}"));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// [`within`] for tests: the value, or a panic that says what never happened.
pub async fn eventually<T, Check, Looked>(deadline: Duration, what: &str, check: Check) -> T
where
    Check: FnMut() -> Looked,
    Looked: Future<Output = Option<T>>,
{
    match within(deadline, what, check).await {
        Ok(found) => found,
        Err(never) => panic!("{never}"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_condition_that_comes_true_is_waited_for() {
        let looks = AtomicU32::new(0);
        let found = eventually(Duration::from_secs(5), "the third look", || async {
            (looks.fetch_add(1, Ordering::SeqCst) == 2).then_some("found")
        })
        .await;
        assert_eq!((found, looks.load(Ordering::SeqCst)), ("found", 3));
    }

    #[tokio::test]
    async fn one_that_never_does_says_what_was_awaited() {
        let never = within(Duration::from_millis(50), "the impossible", || async {
            None::<()>
        })
        .await;
        assert_eq!(never, Err("the impossible: not within 50ms".to_string()));
    }
}
