//! The workloads: what each closed-loop client sends, and the pgbench script that mirrors it.
use std::time::{Duration, Instant};

use futures::future::join_all;
use serde_json::json;

use super::{
    fixture::{
        Fixture, HOT_VISITS_PER_SECOND, PASSWORD, RANDOM_VISITS_PER_SECOND, hot_visit_id,
        random_member, random_visit_id, random_visit_parties,
    },
    stats::Measurement,
};
use crate::client::Outcome;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    /// `requestVisit` by a random member of 10,000.
    Request,
    /// `requestVisit` by one member: every call queues on one balance lock.
    RequestHot,
    /// `completeVisit` of random pre-booked visits.
    Complete,
    /// `completeVisit` of one member's visits: every call queues on one balance lock.
    CompleteHot,
    /// The first page of a member's `visits`, with tasks and members.
    Read,
    /// `login`, bound by Argon2id.
    Login,
    /// Pages of visits at 10,000 and 1,000,000 visits (re-seeds the visits: runs last).
    ReadAtScale,
}

impl Workload {
    /// The default run: `read-at-scale` only when asked for (seeding a million visits takes a
    /// minute of its own).
    pub const ALL: [Workload; 6] = [
        Self::Request,
        Self::RequestHot,
        Self::Complete,
        Self::CompleteHot,
        Self::Read,
        Self::Login,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Request => "request",
            Self::RequestHot => "request-hot",
            Self::Complete => "complete",
            Self::CompleteHot => "complete-hot",
            Self::Read => "read",
            Self::Login => "login",
            Self::ReadAtScale => "read-at-scale",
        }
    }

    /// The file in `integration/pgbench/` that runs the service's statements for this workload.
    pub fn pgbench_script(self) -> Option<&'static str> {
        match self {
            Self::Request => Some("request.sql"),
            Self::RequestHot => Some("request-hot.sql"),
            Self::Complete => Some("complete.sql"),
            Self::CompleteHot => Some("complete-hot.sql"),
            Self::Read | Self::Login | Self::ReadAtScale => None,
        }
    }

    /// Visits pre-booked per second of run, so that neither side runs out.
    pub fn visits_per_second(self) -> u64 {
        match self {
            Self::CompleteHot => HOT_VISITS_PER_SECOND,
            _ => RANDOM_VISITS_PER_SECOND,
        }
    }
}

/// Closed loop: each client sends its next call as soon as the previous answered. Latencies are
/// of successful calls; failures are counted by code.
async fn drive<F, Fut>(clients: usize, duration: Duration, call: F) -> Measurement
where
    F: Fn(usize, u64) -> Fut,
    Fut: Future<Output = Outcome<()>>,
{
    let started = Instant::now();
    let deadline = started + duration;
    let per_client = join_all((0..clients).map(|client| {
        let call = &call;
        async move {
            let mut measured = Measurement::default();
            let mut iteration = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match call(client, iteration).await {
                    Ok(()) => measured.record(sent.elapsed()),
                    Err(failure) => measured.record_error(failure.label()),
                }
                iteration += 1;
            }
            measured
        }
    }))
    .await;
    let mut total = Measurement::default();
    for measured in &per_client {
        total.merge(measured);
    }
    total.elapsed = started.elapsed();
    total
}

/// `first_iteration` moves a round of a complete workload past the visits earlier rounds completed.
pub async fn run_workload(
    fixture: &Fixture,
    workload: Workload,
    clients: usize,
    duration: Duration,
    first_iteration: u64,
) -> Measurement {
    let token = |n: i64| fixture.tokens[usize::try_from(n).unwrap_or(0)].as_str();
    match workload {
        Workload::Request => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture
                    .client(client)
                    .request_visit(token(member), 1, None)
                    .await
                    .map(drop)
            })
            .await
        }
        Workload::RequestHot => {
            drive(clients, duration, |client, _| async move {
                fixture
                    .client(client)
                    .request_visit(token(1), 1, None)
                    .await
                    .map(drop)
            })
            .await
        }
        Workload::Complete | Workload::CompleteHot => {
            let visit_id = if workload == Workload::Complete {
                random_visit_id
            } else {
                hot_visit_id
            };
            drive(clients, duration, |client, iteration| async move {
                let v = client as u64 + (first_iteration + iteration) * clients as u64 + 1;
                let (_, pal) = random_visit_parties(v);
                fixture
                    .client(client)
                    .complete_visit(token(pal), &visit_id(v))
                    .await
                    .map(drop)
            })
            .await
        }
        Workload::Read => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture
                    .client(client)
                    .execute(
                        Some(token(member)),
                        "{ visits(filter: {role: MEMBER}, first: 20) { totalCount edges { node {
                            id date minutes status tasks { name description } member { firstName } } } } }",
                        json!({}),
                    )
                    .await
                    .map(drop)
            })
            .await
        }
        // Measured by `scale::run`, which seeds its own data.
        Workload::ReadAtScale => Measurement::default(),
        Workload::Login => {
            drive(clients, duration, |client, iteration| async move {
                let member = random_member(client, iteration);
                fixture
                    .client(client)
                    .execute(
                        None,
                        "mutation($input: LoginInput!) { login(input: $input) { accessToken } }",
                        json!({ "input": { "email": format!("bench-{member}@bench.test"), "password": PASSWORD } }),
                    )
                    .await
                    .map(drop)
            })
            .await
        }
    }
}
