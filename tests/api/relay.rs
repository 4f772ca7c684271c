//! The relay against a real `nats-server -js` of the test's own.
use std::{collections::HashSet, time::Duration};

use testkit::{
    eventually,
    nats::{NatsServer, StreamedMessage, read_stream},
    nats_cluster::NatsCluster,
    reply::Reply,
};

use crate::helpers::{TestApp, positive};

const STREAM: &str = "HOME_VISITS";

async fn relayed_app(nats: &NatsServer) -> TestApp {
    let url = nats.url();
    TestApp::spawn_with(move |config| config.events.nats_servers = vec![url]).await
}

/// The outbox's event ids in log order.
async fn outbox_ids(app: &TestApp) -> Vec<String> {
    app.query_column("SELECT id::text FROM outbox ORDER BY txid, position")
        .await
}

/// Waits until the stream holds at least `count` messages, and returns them all.
async fn stream_with(nats: &NatsServer, count: usize) -> Vec<StreamedMessage> {
    let what = format!("{count} messages on the stream");
    eventually(Duration::from_secs(10), &what, || async {
        let messages = read_stream(&nats.url(), STREAM).await.unwrap_or_default();
        (messages.len() >= count).then_some(messages)
    })
    .await
}

async fn readiness(app: &TestApp) -> Reply {
    app.readiness().await.1
}

#[track_caller]
fn assert_exactly_the_log(messages: &[StreamedMessage], ids: &[String]) {
    let streamed: Vec<String> = messages
        .iter()
        .map(|message| {
            message.envelope["id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(streamed, ids, "the stream is the log, in order, once each");
    for message in messages {
        assert_eq!(
            message.message_id.as_deref(),
            message.envelope["id"].as_str(),
            "Nats-Msg-Id is the event id"
        );
        let expected_subject = format!(
            "home_visits.{}.{}",
            message.envelope["aggregateType"]
                .as_str()
                .unwrap_or_default(),
            message.envelope["type"].as_str().unwrap_or_default()
        );
        assert_eq!(message.subject, expected_subject);
    }
}

#[tokio::test]
async fn every_event_reaches_the_stream_once_in_log_order() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let app = relayed_app(&nats).await;
    let ann = app.register_user("ann").await;
    let bob = app.register_user("bob").await;
    for _ in 0..3 {
        let visit = app.requested_visit(&ann.access_token, 10).await;
        app.complete_visit(&bob.access_token, &visit).await;
    }
    app.settled().await;
    let ids = outbox_ids(&app).await;
    // Two registrations, three times (request, completion, transfer), and for each completion a
    // notification to the member and one to the pal.
    assert_eq!(ids.len(), 2 + 3 * 3 + 3 * 2);

    let messages = stream_with(&nats, ids.len()).await;

    assert_exactly_the_log(&messages, &ids);
    let ready = readiness(&app).await;
    assert_eq!(ready["relay"]["leader"], true, "{ready}");
    assert_eq!(ready["relay"]["lag"]["events"], 0, "{ready}");
}

#[tokio::test]
async fn with_the_broker_down_mutations_go_on_and_the_relay_catches_up_after() {
    let mut nats = NatsServer::start().await.expect("nats-server starts");
    let app = relayed_app(&nats).await;
    nats.kill().await.expect("broker stopped");
    let ann = app.register_user("ann").await;
    let visit = app.requested_visit(&ann.access_token, 30).await;
    let cancelled = app.cancel_visit(&ann.access_token, &visit).await;
    assert_eq!(cancelled["data"]["cancelVisit"]["status"], "CANCELLED");
    let ids = outbox_ids(&app).await;
    assert_eq!(ids.len(), 3);
    let behind = eventually(
        Duration::from_secs(5),
        "the relay 3 events behind",
        || async {
            let behind = readiness(&app).await;
            (behind["relay"]["brokerConnected"] == false && behind["relay"]["lag"]["events"] == 3)
                .then_some(behind)
        },
    )
    .await;
    assert_eq!(behind["status"], "ready", "{behind}");
    assert_eq!(behind["relay"]["brokerConnected"], false, "{behind}");
    assert_eq!(behind["relay"]["lag"]["events"], 3, "{behind}");

    nats.restart().await.expect("broker back");
    let messages = stream_with(&nats, ids.len()).await;

    assert_exactly_the_log(&messages, &ids);
}

#[tokio::test]
async fn one_instance_relays_and_another_takes_over_when_it_dies() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let first = relayed_app(&nats).await;
    let url = nats.url();
    let second = first
        .spawn_sibling_with(move |config| config.events.nats_servers = vec![url])
        .await;
    let ann = first.register_user("ann").await;
    first.requested_visit(&ann.access_token, 10).await;
    let before = outbox_ids(&first).await;
    stream_with(&nats, before.len()).await;
    let leaders: Vec<bool> = [readiness(&first).await, readiness(&second).await]
        .iter()
        .map(|ready| ready["relay"]["leader"] == true)
        .collect();
    assert_eq!(
        leaders.iter().filter(|leads| **leads).count(),
        1,
        "exactly one leader: {leaders:?}"
    );
    let (leader, follower) = if leaders[0] {
        (&first, &second)
    } else {
        (&second, &first)
    };

    leader.stop();
    let bob = follower.register_user("bob").await;
    follower.requested_visit(&bob.access_token, 20).await;
    let ids = outbox_ids(follower).await;
    let messages = stream_with(&nats, ids.len()).await;

    assert_exactly_the_log(&messages, &ids);
    assert_eq!(readiness(follower).await["relay"]["leader"], true);
    let unique: HashSet<&str> = messages
        .iter()
        .filter_map(|message| message.message_id.as_deref())
        .collect();
    assert_eq!(unique.len(), ids.len());
}

/// On a three-node cluster, with the relay's client held to one node: two nodes killed leave the
/// stream without a quorum, so nothing is acknowledged. The relay must send what it could not
/// store again (with the same ids) until the nodes are back, and the stream must end up the log,
/// exactly once.
#[tokio::test]
async fn events_unacknowledged_while_the_stream_has_no_quorum_are_sent_again_and_stored_once() {
    let mut cluster = NatsCluster::start().await.expect("a three-node cluster");
    let survivor = cluster.node_urls()[0].clone();
    let app = TestApp::spawn_with({
        let survivor = survivor.clone();
        move |config| {
            config.events.nats_servers = vec![survivor];
            config.events.nats_stream_replicas = positive(3);
        }
    })
    .await;
    app.register_user("before-fault").await;
    let caught_up = || async {
        let ready = readiness(&app).await;
        (ready["relay"]["lag"]["events"] == 0 && ready["relay"]["published"] != 0).then_some(())
    };
    // A new cluster can take some seconds to create a replicated stream.
    eventually(Duration::from_secs(60), "the relay caught up", caught_up).await;

    cluster.kill(1).await.expect("n2 killed");
    cluster.kill(2).await.expect("n3 killed");
    app.register_user("no-quorum").await;
    eventually(
        Duration::from_secs(20),
        "the relay sending unacknowledged events again",
        || async {
            let ready = readiness(&app).await;
            (ready["relay"]["resent"].as_u64() > Some(0)).then_some(())
        },
    )
    .await;
    cluster.restart(1).await.expect("n2 back");
    cluster.restart(2).await.expect("n3 back");
    eventually(
        Duration::from_secs(60),
        "the relay caught up again",
        caught_up,
    )
    .await;

    let ids = outbox_ids(&app).await;
    let messages = eventually(Duration::from_secs(10), "the whole stream", || async {
        let messages = read_stream(&survivor, STREAM).await.ok()?;
        (messages.len() >= ids.len()).then_some(messages)
    })
    .await;
    assert_exactly_the_log(&messages, &ids);
}
