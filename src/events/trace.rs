//! The W3C `traceparent` of the request being served, carried into the events it records. Held in
//! a task-local for the request's future, so contexts record it without knowing about HTTP.
use std::future::Future;

tokio::task_local! {
    static TRACEPARENT: Option<String>;
}

/// Runs `work` with `traceparent` as the current one.
pub async fn with_traceparent<F: Future>(traceparent: Option<String>, work: F) -> F::Output {
    TRACEPARENT.scope(traceparent, work).await
}

/// The current request's traceparent, if it came with a valid one.
pub fn current() -> Option<String> {
    TRACEPARENT.try_with(Clone::clone).ok().flatten()
}

/// A `traceparent` header value if it is well formed (`version-traceid-parentid-flags`, lower-case
/// hex, ids not all zero); anything else is ignored rather than copied into the log.
pub fn parse(header: &str) -> Option<String> {
    let header = header.trim();
    let parts: Vec<&str> = header.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |part: &str, len: usize| {
        part.len() == len
            && part
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let all_zero = |part: &str| part.bytes().all(|b| b == b'0');
    let valid = hex(version, 2)
        && *version != "ff"
        && hex(trace_id, 32)
        && !all_zero(trace_id)
        && hex(parent_id, 16)
        && !all_zero(parent_id)
        && hex(flags, 2);
    valid.then(|| header.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_traceparents_are_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse(good).as_deref(), Some(good));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_traceparent_is_current_only_inside_its_scope() {
        assert_eq!(current(), None);
        let inside = with_traceparent(Some("tp".into()), async { current() }).await;
        assert_eq!(inside.as_deref(), Some("tp"));
    }
}
