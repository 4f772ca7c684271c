//! The `pooled` scenario: two instances behind a PgBouncer in transaction mode that the harness
//! starts (four server connections for both instances' pools), the relay on. Under the mixed
//! load: a balance row held past the lock timeout must end its request in a retryable `CONFLICT`
//! (the timeout travels with each transaction, not with a server connection), PgBouncer is killed
//! and started again, and a request commits late. Then the stream and the books are checked.
use std::{
    path::Path,
    time::{Duration, Instant},
};

use sea_orm::{ConnectionTrait, TransactionTrait};
use testkit::pgbouncer::PgBouncer;

use crate::{
    client::Session,
    harness::{Harness, Verdict},
    nats::NatsServer,
    scenarios::{
        NEEDS_SPAWN,
        bank::{self, BankOptions},
        late_commit,
        own_stand::{OwnStand, fresh_database},
    },
};

/// The instances' lock timeout (the service's default): a held row must end the wait near it.
const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn pooled(suite: &Harness, binary: Option<&Path>, options: &BankOptions) -> Verdict {
    let binary = binary.ok_or(NEEDS_SPAWN)?;
    let database_url = fresh_database(&suite.database_url, "pooled").await?;
    let mut bouncer = PgBouncer::start(&database_url, "transaction", 4)
        .await
        .map_err(|error| format!("{error:#}"))?;
    let nats = NatsServer::start()
        .await
        .map_err(|error| format!("{error:#}"))?;
    let env = vec![
        ("DATABASE_POOL_MODE".to_string(), "transaction".to_string()),
        ("DATABASE_DIRECT_URL".to_string(), database_url.clone()),
        ("DATABASE_POOL_SIZE".to_string(), "6".to_string()),
        ("NATS_URL".to_string(), nats.url()),
    ];
    let stand = OwnStand::start(
        suite,
        binary,
        &database_url,
        &bouncer.url(&database_url),
        env,
    )
    .await?;
    let outcome = async {
        let harness = &stand.harness;
        let users = harness.new_users("pooled", options.users).await?;
        let faults = async {
            if options.faults {
                inject_faults(harness, &mut bouncer, &users, options.duration).await
            } else {
                Ok(Vec::new())
            }
        };
        let workload = bank::run_workload(harness, options, &users, faults).await?;
        let checked = stand.check(&nats.url()).await?;
        Ok(format!("through PgBouncer: {checked}; {workload}"))
    }
    .await;
    stand.stop().await;
    outcome
}

async fn inject_faults(
    harness: &Harness,
    bouncer: &mut PgBouncer,
    users: &[Session],
    duration: Duration,
) -> Result<Vec<String>, String> {
    let started = Instant::now();
    let at = |fraction: f64| started + duration.mul_f64(fraction);
    let mut log = Vec::new();
    tokio::time::sleep_until(at(0.15).into()).await;
    log.push(held_balance(harness, &users[0]).await?);

    tokio::time::sleep_until(at(0.5).into()).await;
    bouncer
        .restart()
        .await
        .map_err(|error| format!("{error:#}"))?;
    log.push(harness.progress.fault("kill -9 and restart of PgBouncer"));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut ready = true;
        for client in &harness.clients {
            ready &= client.is_ready().await;
        }
        if ready {
            break;
        }
        if Instant::now() >= deadline {
            return Err("the instances were not ready 30 s after PgBouncer came back".into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    tokio::time::sleep_until(at(0.7).into()).await;
    log.push(late_commit::hold_a_request(harness, late_commit::hold_in(duration)).await?);
    Ok(log)
}

/// Holds `member`'s balance row from outside and asks for a visit of theirs: the request must
/// wait out the lock timeout, then fail with a retryable `CONFLICT`. Behind a transaction pooler
/// the server connection has no timeout of its own, so only the one each transaction sets can
/// end the wait.
async fn held_balance(harness: &Harness, member: &Session) -> Result<String, String> {
    let lock = harness
        .db
        .begin()
        .await
        .map_err(|error| error.to_string())?;
    lock.execute_unprepared(&format!(
        "SELECT 1 FROM balances WHERE user_id = '{}' FOR UPDATE",
        member.user_id
    ))
    .await
    .map_err(|error| error.to_string())?;
    let line = harness.progress.fault(format!(
        "held the balance row of {} from outside",
        member.user_id
    ));
    let started = Instant::now();
    let outcome = tokio::time::timeout(
        LOCK_TIMEOUT * 3,
        harness.client(0).request_visit(&member.token, 5, None),
    )
    .await;
    let waited = started.elapsed();
    lock.rollback().await.map_err(|error| error.to_string())?;
    match outcome {
        Ok(Err(failure))
            if failure.code == "CONFLICT" && failure.retryable && waited >= LOCK_TIMEOUT / 2 =>
        {
            Ok(format!(
                "{line}: a request on it ended in a retryable CONFLICT after {:.1}s",
                waited.as_secs_f64()
            ))
        }
        Err(_) => Err(format!(
            "a request on a held balance row was still waiting after {waited:?}: the lock \
             timeout did not reach its transaction"
        )),
        Ok(other) => Err(format!(
            "a request on a held balance row ended after {waited:?} with {other:?}, not a \
             retryable CONFLICT at the lock timeout"
        )),
    }
}
