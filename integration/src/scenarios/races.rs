//! Race scenarios. Every one spreads its calls over the instances, so the only thing the calls
//! share is PostgreSQL: if they agree, it is because the database's locks made them.
use std::sync::{
    Arc,
    atomic::{AtomicUsize, Ordering},
};

use futures::future::join_all;

use crate::{
    client::Outcome,
    harness::{Harness, Verdict},
};

fn count_ok<T>(outcomes: &[Outcome<T>]) -> usize {
    outcomes.iter().filter(|outcome| outcome.is_ok()).count()
}

fn count_code<T>(outcomes: &[Outcome<T>], code: &str) -> usize {
    outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(failure) if failure.code == code))
        .count()
}

fn codes<T>(outcomes: &[Outcome<T>]) -> Vec<String> {
    outcomes
        .iter()
        .map(|outcome| match outcome {
            Ok(_) => "ok".to_string(),
            Err(failure) => failure.label(),
        })
        .collect()
}

/// Two simultaneous requests, one per instance, that do not both fit: exactly one must be refused.
pub async fn over_budget_pair(harness: &Harness) -> Verdict {
    const ROUNDS: usize = 5;
    for round in 0..ROUNDS {
        let member = harness.new_user("pair").await?;
        let minutes = member.minutes * 2 / 3;
        let outcomes = join_all((0..2).map(|index| {
            harness
                .client(index)
                .request_visit(&member.token, minutes, None)
        }))
        .await;
        if count_ok(&outcomes) != 1 || count_code(&outcomes, "INSUFFICIENT_MINUTES") != 1 {
            return Err(format!(
                "round {round}: two {minutes}-minute requests on {} minutes gave {:?}",
                member.minutes,
                codes(&outcomes)
            ));
        }
    }
    Ok(format!(
        "{ROUNDS} rounds: one booked, one INSUFFICIENT_MINUTES"
    ))
}

/// Twenty simultaneous 10-minute requests of one member across the instances.
pub async fn over_budget_burst(harness: &Harness) -> Verdict {
    let member = harness.new_user("burst").await?;
    let expected = usize::try_from(member.minutes / 10).unwrap_or(0).min(20);
    let outcomes =
        join_all((0..20).map(|index| harness.client(index).request_visit(&member.token, 10, None)))
            .await;
    let booked = count_ok(&outcomes);
    let refused = count_code(&outcomes, "INSUFFICIENT_MINUTES");
    if booked != expected || booked + refused != 20 {
        return Err(format!(
            "{booked} of 20 booked on {} minutes (expected {expected}): {:?}",
            member.minutes,
            codes(&outcomes)
        ));
    }
    Ok(format!("{booked} booked, {refused} refused"))
}

/// One visit completed on both instances at once, then one completed by eight pals at once.
pub async fn double_completion(harness: &Harness) -> Verdict {
    let member = harness.new_user("paid-once").await?;
    let pals = harness.new_users("pal", 8).await?;
    let mut details = Vec::new();
    for contenders in [2, 8] {
        let visit_id = harness
            .client(0)
            .request_visit(&member.token, 20, None)
            .await
            .map_err(|failure| format!("request failed: {failure:?}"))?;
        let outcomes = join_all(
            pals[..contenders]
                .iter()
                .enumerate()
                .map(|(index, pal)| harness.client(index).complete_visit(&pal.token, &visit_id)),
        )
        .await;
        let paid = harness.transactions_for(&visit_id).await?;
        if count_ok(&outcomes) != 1
            || paid != 1
            || count_code(&outcomes, "CONFLICT") != contenders - 1
        {
            return Err(format!(
                "{contenders} pals at once: {:?}, {paid} transactions",
                codes(&outcomes)
            ));
        }
        details.push(format!("{contenders} pals: 1 paid"));
    }
    Ok(details.join(", "))
}

/// A member with six visits booking all their minutes: six completions and one new request run
/// together, the request placed after 0, 1, ... 6 completions have finished. The request never fits.
pub async fn completions_racing_a_request(harness: &Harness) -> Verdict {
    for position in 0..=6 {
        let member = harness.new_user("six").await?;
        let pals = harness.new_users("six-pal", 6).await?;
        let minutes = member.minutes / 6;
        let mut visit_ids = Vec::new();
        for index in 0..6 {
            visit_ids.push(
                harness
                    .client(index)
                    .request_visit(&member.token, minutes, None)
                    .await
                    .map_err(|failure| format!("booking failed: {failure:?}"))?,
            );
        }
        let finished = Arc::new(AtomicUsize::new(0));
        let completions = join_all(pals.iter().zip(&visit_ids).enumerate().map(
            |(index, (pal, visit_id))| {
                let finished = finished.clone();
                async move {
                    let outcome = harness
                        .client(index)
                        .complete_visit(&pal.token, visit_id)
                        .await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    outcome
                }
            },
        ));
        let request = async {
            while finished.load(Ordering::SeqCst) < position {
                tokio::task::yield_now().await;
            }
            harness
                .client(position + 1)
                .request_visit(&member.token, minutes, None)
                .await
        };
        let (completions, request) = tokio::join!(completions, request);
        let balance = harness
            .client(0)
            .balance(&member.token)
            .await
            .map_err(|failure| format!("balance failed: {failure:?}"))?;
        let remainder = member.minutes - 6 * minutes;
        let request_refused = matches!(&request, Err(failure) if failure.code == "INSUFFICIENT_MINUTES")
            || (remainder >= minutes && request.is_ok());
        if count_ok(&completions) != 6 || !request_refused || balance.minutes != remainder {
            return Err(format!(
                "request after {position} completions: completions {:?}, request {:?}, member left with {}",
                codes(&completions),
                request.map(|_| "ok").map_err(|failure| failure.label()),
                balance.minutes
            ));
        }
    }
    Ok("request refused at every one of 7 positions; 6 of 6 paid each time".into())
}

/// The same idempotent request sent to both instances at once, several times over.
pub async fn idempotent_retries(harness: &Harness) -> Verdict {
    let member = harness.new_user("retry").await?;
    let outcomes = join_all((0..6).map(|index| {
        harness
            .client(index)
            .request_visit(&member.token, 30, Some("same-tap"))
    }))
    .await;
    let ids: std::collections::HashSet<_> = outcomes
        .iter()
        .filter_map(|outcome| outcome.as_ref().ok())
        .collect();
    let stored = harness.visits_of(&member.user_id).await?;
    if count_ok(&outcomes) != 6 || ids.len() != 1 || stored != 1 {
        return Err(format!(
            "{:?}; {} distinct ids, {stored} visits stored",
            codes(&outcomes),
            ids.len()
        ));
    }
    Ok("6 retries on 2 instances: 1 visit".into())
}
