//! The `notifications-replay` scenario: the workload, then the notifications read model thrown
//! away and rebuilt from the whole log twice (it must come out the same), then a poison event
//! slipped into the log (it must be dead-lettered, and the events behind it still applied).
use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, Statement};

use crate::{
    harness::{Harness, Verdict},
    nats::NatsServer,
    scenarios::bank::{self, BankOptions},
};

/// The read model as content, without its own ids and read marks.
async fn snapshot(harness: &Harness) -> Result<Vec<String>, String> {
    let rows = harness
        .db
        .query_all_raw(Statement::from_string(
            harness.db.get_database_backend(),
            "SELECT concat_ws(' ', recipient_id, kind, visit_id, actor_id, minutes, event_id) AS row \
             FROM notifications ORDER BY 1",
        ))
        .await
        .map_err(|error| error.to_string())?;
    Ok(rows
        .iter()
        .filter_map(|row| row.try_get::<String>("", "row").ok())
        .collect())
}

async fn count(harness: &Harness, sql: &str) -> Result<i64, String> {
    let row = harness
        .db
        .query_one_raw(Statement::from_string(
            harness.db.get_database_backend(),
            sql,
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no row")?;
    row.try_get_by_index::<i64>(0)
        .map_err(|error| error.to_string())
}

/// Events the consumer still has to handle: wanted ones in the log not yet in its inbox.
async fn unhandled(harness: &Harness) -> Result<i64, String> {
    count(
        harness,
        "SELECT count(*) FROM outbox o WHERE o.type IN ('visit.accepted', 'visit.completed', \
         'visit.cancelled', 'visit.expired', 'ledger.transfer_recorded') \
         AND NOT EXISTS (SELECT 1 FROM event_inbox i WHERE i.consumer = 'notifications' AND i.event_id = o.id)",
    )
    .await
}

async fn wait_until_handled(harness: &Harness, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        let left = unhandled(harness).await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{left} events still unhandled after {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Empties the read model and what the consumer remembers, so it starts over from the first event.
async fn forget_everything(harness: &Harness, nats: Option<&NatsServer>) -> Result<(), String> {
    harness
        .db
        .execute_unprepared(
            "BEGIN; DELETE FROM notifications; DELETE FROM event_inbox WHERE consumer = 'notifications'; \
             DELETE FROM event_aggregate_versions WHERE consumer = 'notifications'; \
             DELETE FROM event_checkpoints WHERE name = 'consumer:notifications'; COMMIT;",
        )
        .await
        .map_err(|error| error.to_string())?;
    if let Some(nats) = nats {
        // The instances re-create the durable consumer, which delivers the stream from the start.
        let client = async_nats::connect(nats.url())
            .await
            .map_err(|error| error.to_string())?;
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream
            .get_stream("HOME_VISITS")
            .await
            .map_err(|error| error.to_string())?;
        stream
            .delete_consumer("notifications")
            .await
            .map_err(|error| error.to_string())?;
    }
    Ok(())
}

/// A handler that fails twice and then succeeds, injected from the database's side (the instances
/// are black boxes): a trigger refuses the notification of one visit while a sequence, which a
/// rollback does not undo, has counted fewer than three attempts. Returns the attempts seen.
async fn fails_twice_then_succeeds(harness: &Harness) -> Result<i64, String> {
    let member = harness.new_user("flaky").await?;
    let pal = harness.new_user("flaky").await?;
    let client = harness.client(0);
    let visit = client
        .request_visit(&member.token, 10, None)
        .await
        .map_err(|failure| format!("request: {failure:?}"))?;
    let visit: uuid::Uuid = visit.parse().map_err(|_| "visit id is no uuid")?;
    harness
        .db
        .execute_unprepared(&format!(
            "DROP TRIGGER IF EXISTS harness_flaky ON notifications; \
             DROP SEQUENCE IF EXISTS harness_flaky_attempts; \
             CREATE SEQUENCE harness_flaky_attempts; \
             CREATE OR REPLACE FUNCTION harness_flaky() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN \
               IF NEW.visit_id = '{visit}' AND nextval('harness_flaky_attempts') <= 2 THEN \
                 RAISE EXCEPTION 'injected failure %', currval('harness_flaky_attempts'); \
               END IF; \
               RETURN NEW; \
             END $$; \
             CREATE TRIGGER harness_flaky BEFORE INSERT ON notifications \
               FOR EACH ROW EXECUTE FUNCTION harness_flaky();"
        ))
        .await
        .map_err(|error| error.to_string())?;
    let outcome = async {
        client
            .accept_visit(&pal.token, &visit.to_string())
            .await
            .map_err(|failure| format!("accept: {failure:?}"))?;
        wait_until_handled(harness, Duration::from_secs(60)).await?;
        let notified = count(
            harness,
            &format!(
                "SELECT count(*) FROM notifications WHERE visit_id = '{visit}' AND kind = 'VISIT_ACCEPTED'"
            ),
        )
        .await?;
        let dead = count(
            harness,
            &format!(
                "SELECT count(*) FROM event_dead_letters d JOIN outbox o ON o.id = d.event_id \
                 WHERE o.aggregate_id = '{visit}'"
            ),
        )
        .await?;
        let attempts = count(harness, "SELECT last_value FROM harness_flaky_attempts").await?;
        if notified != 1 || dead != 0 || attempts < 3 {
            return Err(format!(
                "the flaky notification: applied {notified} times (want 1), {dead} dead letters (want 0), \
                 {attempts} attempts (want 3 or more)"
            ));
        }
        Ok(attempts)
    }
    .await;
    harness
        .db
        .execute_unprepared(
            "DROP TRIGGER IF EXISTS harness_flaky ON notifications; \
             DROP FUNCTION IF EXISTS harness_flaky(); DROP SEQUENCE IF EXISTS harness_flaky_attempts;",
        )
        .await
        .map_err(|error| error.to_string())?;
    outcome
}

pub async fn notifications_replay(
    harness: &Harness,
    nats: Option<&NatsServer>,
    options: &BankOptions,
) -> Verdict {
    let workload = bank::run_with_faults(harness, options, async { Ok(Vec::new()) }).await?;
    wait_until_handled(harness, Duration::from_secs(60)).await?;
    let original = snapshot(harness).await?;
    if original.is_empty() {
        return Err(format!("the workload notified nobody; {workload}"));
    }
    for replay in 1..=2 {
        forget_everything(harness, nats).await?;
        wait_until_handled(harness, Duration::from_secs(60)).await?;
        let rebuilt = snapshot(harness).await?;
        if rebuilt != original {
            let missing = original.iter().filter(|row| !rebuilt.contains(row)).count();
            let extra = rebuilt.iter().filter(|row| !original.contains(row)).count();
            return Err(format!(
                "replay {replay} rebuilt {} notifications where there were {} ({missing} missing, {extra} extra)",
                rebuilt.len(),
                original.len()
            ));
        }
    }

    let letters_before = count(
        harness,
        "SELECT count(*) FROM event_dead_letters WHERE consumer = 'notifications'",
    )
    .await?;
    let poison = uuid::Uuid::now_v7();
    harness
        .db
        .execute_unprepared(&format!(
            "INSERT INTO outbox (id, type, version, aggregate_type, aggregate_id, aggregate_version, payload) \
             VALUES ('{poison}', 'visit.accepted', 1, 'visit', '{poison}', 1, '{{\"visitId\": \"not a uuid\"}}')"
        ))
        .await
        .map_err(|error| error.to_string())?;
    // Work behind the poison event must still be applied.
    let after_poison = bank::run_with_faults(
        harness,
        &BankOptions {
            duration: Duration::from_secs(2),
            ..*options
        },
        async { Ok(Vec::new()) },
    )
    .await?;
    wait_until_handled(harness, Duration::from_secs(60)).await?;
    let letters = count(
        harness,
        "SELECT count(*) FROM event_dead_letters WHERE consumer = 'notifications'",
    )
    .await?;
    let poisoned = count(
        harness,
        &format!("SELECT count(*) FROM event_dead_letters WHERE event_id = '{poison}'"),
    )
    .await?;
    let doubled = count(
        harness,
        "SELECT count(*) FROM (SELECT event_id, recipient_id FROM notifications GROUP BY 1, 2 HAVING count(*) > 1) twice",
    )
    .await?;
    if letters - letters_before != 1 || poisoned != 1 || doubled != 0 {
        return Err(format!(
            "after the poison event: {} new dead letters (want 1), poison dead-lettered {poisoned} times, \
             {doubled} notifications applied twice; {after_poison}",
            letters - letters_before
        ));
    }
    let attempts = fails_twice_then_succeeds(harness).await?;
    Ok(format!(
        "{} notifications rebuilt identically twice; the poison event dead-lettered alone; a \
         notification refused twice applied once on attempt {attempts}; {workload}",
        original.len()
    ))
}
