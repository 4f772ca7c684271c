//! The `broker-cluster` scenario: two instances publishing to a three-node NATS cluster the
//! harness starts (`NATS_STREAM_REPLICAS=3`). Under the mixed load the node leading the stream is
//! killed with SIGKILL, then a second node (the stream loses its quorum), both are started again,
//! and once the relay publishes again a request commits late. A publish with no leader to acknowledge it must be sent again,
//! with the same `Nats-Msg-Id`, so the stream still holds every event of the log exactly once,
//! each visit's in order.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use testkit::nats_cluster::NatsCluster;

use crate::{
    harness::{Harness, Verdict},
    scenarios::{
        NEEDS_SPAWN,
        bank::{self, BankOptions},
        event_stream::STREAM,
        late_commit,
        own_stand::{OwnStand, fresh_database},
    },
};

pub async fn broker_cluster(
    suite: &Harness,
    binary: Option<&Path>,
    options: &BankOptions,
) -> Verdict {
    let binary = binary.ok_or(NEEDS_SPAWN)?;
    let database_url = fresh_database(&suite.database_url, "broker_cluster").await?;
    let mut cluster = NatsCluster::start()
        .await
        .map_err(|error| format!("{error:#}"))?;
    let env = vec![
        ("NATS_URL".to_string(), cluster.urls()),
        ("NATS_STREAM_REPLICAS".to_string(), "3".to_string()),
    ];
    let stand = OwnStand::start(suite, binary, &database_url, &database_url, env).await?;
    let outcome = async {
        let harness = &stand.harness;
        let faults = async {
            if options.faults {
                inject_faults(harness, &mut cluster, options.duration).await
            } else {
                Ok(Vec::new())
            }
        };
        let workload = bank::run_with_faults(harness, options, faults).await?;
        // Every node is back: any of them serves the stream.
        let checked = stand.check(&cluster.node_urls()[0]).await?;
        let RelayCounts {
            resent, duplicates, ..
        } = relay_counts(harness).await;
        Ok(format!(
            "three nodes, the stream's leader killed: {checked}; the relays sent {resent} events \
             again, {duplicates} of which the broker already had; {workload}"
        ))
    }
    .await;
    stand.stop().await;
    outcome
}

async fn inject_faults(
    harness: &Harness,
    cluster: &mut NatsCluster,
    duration: Duration,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    tokio::time::sleep_until(at(0.2).into()).await;
    // A new cluster can take some seconds to create a replicated stream: the relay retries.
    let asked = Instant::now();
    let leader = loop {
        match cluster.stream_leader(STREAM).await {
            Ok(leader) => break leader,
            Err(error) if asked.elapsed() > Duration::from_secs(30) => {
                return Err(format!("finding the stream's leader: {error:#}"));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let index = cluster
        .index_of(&leader)
        .ok_or_else(|| format!("the stream's leader {leader} is not one of the nodes"))?;
    cluster
        .kill(index)
        .await
        .map_err(|error| format!("{error:#}"))?;
    log.push(
        harness
            .progress
            .fault(format!("kill -9 of {leader}, the stream's leader")),
    );
    // A second node down leaves the stream without a quorum, so no new leader can be elected:
    // every publish meanwhile goes unacknowledged and must be sent again.
    tokio::time::sleep_until(at(0.25).into()).await;
    let second = (index + 1) % testkit::nats_cluster::NODES;
    cluster
        .kill(second)
        .await
        .map_err(|error| format!("{error:#}"))?;
    log.push(harness.progress.fault(format!(
        "kill -9 of a second node, n{}: no quorum",
        second + 1
    )));
    tokio::time::sleep_until(at(0.32).into()).await;
    if !relay_reports_its_lag(harness).await {
        return Err("no instance's /readyz reported relay.lag.events with the nodes down".into());
    }
    tokio::time::sleep_until(at(0.4).into()).await;
    let published_before = relay_counts(harness).await.published;
    for node in [index, second] {
        cluster
            .restart(node)
            .await
            .map_err(|error| format!("{error:#}"))?;
    }
    log.push(
        harness
            .progress
            .fault(format!("{leader} and n{} started again", second + 1)),
    );
    // The late commit must find the relay reading steadily again (not waiting out a back-off or
    // a stream request to a cluster still settling), or a reader that loses late commits would
    // have nothing to lose: it must have published in two looks half a second apart.
    let mut last = published_before;
    let mut steady = 0;
    while steady < 2 && Instant::now() < at(0.85) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let published = relay_counts(harness).await.published;
        steady = if published > last { steady + 1 } else { 0 };
        last = published;
    }
    if steady < 2 {
        return Err("the relay did not publish steadily again after the nodes came back".into());
    }
    log.push(harness.progress.fault("the relay publishes steadily again"));
    log.push(late_commit::hold_a_request(harness, late_commit::hold_in(duration)).await?);
    Ok(log)
}

async fn relay_reports_its_lag(harness: &Harness) -> bool {
    for client in &harness.clients {
        if let Some(ready) = client.readiness().await
            && ready["relay"]["lag"]["events"].is_u64()
        {
            return true;
        }
    }
    false
}

/// What the relays of both instances have done so far.
#[derive(Debug, Default, Clone, Copy)]
struct RelayCounts {
    published: u64,
    resent: u64,
    duplicates: u64,
}

async fn relay_counts(harness: &Harness) -> RelayCounts {
    let mut counts = RelayCounts::default();
    for client in &harness.clients {
        if let Some(ready) = client.readiness().await {
            let count = |name: &str| ready["relay"][name].as_u64().unwrap_or(0);
            counts.published += count("published");
            counts.resent += count("resent");
            counts.duplicates += count("duplicates");
        }
    }
    counts
}
