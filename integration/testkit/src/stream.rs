//! The event stream judged against the books: what a broker holds must be the outbox, exactly.
use std::collections::{BTreeMap, HashMap, HashSet};

use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use crate::nats::StreamedMessage;

/// What [`check_stream`] found.
pub struct Findings {
    pub summary: String,
    pub problems: Vec<String>,
    /// Outbox events not on the stream.
    pub missing: usize,
}

/// Every outbox event on the stream exactly once, nothing else on it, each aggregate's versions
/// gapless and in order, and the completed visits' credits and fees equal to the ledger's.
pub async fn check_stream(
    db: &DatabaseConnection,
    messages: &[StreamedMessage],
) -> Result<Findings, String> {
    let outbox: Vec<String> = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id::text AS id FROM outbox",
        ))
        .await
        .map_err(|error| error.to_string())?
        .iter()
        .filter_map(|row| row.try_get::<String>("", "id").ok())
        .collect();
    let ledger = db
        .query_one_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS paid, COALESCE(sum(pal_credit), 0)::int8 AS credits, \
                    COALESCE(sum(fee), 0)::int8 AS fees FROM transactions",
        ))
        .await
        .map_err(|error| error.to_string())?
        .ok_or("no ledger totals")?;
    let ledger_totals: (i64, i64, i64) = (
        ledger
            .try_get("", "paid")
            .map_err(|error| error.to_string())?,
        ledger
            .try_get("", "credits")
            .map_err(|error| error.to_string())?,
        ledger
            .try_get("", "fees")
            .map_err(|error| error.to_string())?,
    );

    let mut problems = Vec::new();
    let mut seen: HashMap<&str, u32> = HashMap::new();
    let mut versions: BTreeMap<(String, String), Vec<i64>> = BTreeMap::new();
    let mut streamed_totals = (0_i64, 0_i64, 0_i64);
    for message in messages {
        let envelope = &message.envelope;
        let id = envelope["id"].as_str().unwrap_or_default();
        *seen.entry(id).or_default() += 1;
        if message.message_id.as_deref() != Some(id) {
            problems.push(format!(
                "message {} has Nats-Msg-Id {:?}",
                message.sequence, message.message_id
            ));
        }
        versions
            .entry((
                envelope["aggregateType"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                envelope["aggregateId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            ))
            .or_default()
            .push(envelope["aggregateVersion"].as_i64().unwrap_or(0));
        if envelope["type"] == "visit.completed" {
            streamed_totals.0 += 1;
            streamed_totals.1 += envelope["payload"]["palCredit"].as_i64().unwrap_or(0);
            streamed_totals.2 += envelope["payload"]["fee"].as_i64().unwrap_or(0);
        }
    }
    let duplicated: Vec<&&str> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(id, _)| id)
        .collect();
    if !duplicated.is_empty() {
        problems.push(format!(
            "{} events on the stream more than once (e.g. {})",
            duplicated.len(),
            duplicated[0]
        ));
    }
    let recorded: HashSet<&str> = outbox.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = recorded
        .iter()
        .filter(|id| !seen.contains_key(**id))
        .collect();
    let missing_count = missing.len();
    if !missing.is_empty() {
        problems.push(format!(
            "{} of {} outbox events missing from the stream (e.g. {})",
            missing.len(),
            recorded.len(),
            missing[0]
        ));
    }
    let phantoms = seen.keys().filter(|id| !recorded.contains(*id)).count();
    if phantoms > 0 {
        problems.push(format!(
            "{phantoms} events on the stream that the outbox never recorded"
        ));
    }
    let out_of_order: Vec<String> = versions
        .iter()
        .filter(|(_, found)| {
            let mut unique = (*found).clone();
            unique.dedup();
            unique
                .iter()
                .enumerate()
                .any(|(index, version)| *version != index as i64 + 1)
        })
        .map(|((kind, id), found)| format!("{kind} {id}: {found:?}"))
        .collect();
    if !out_of_order.is_empty() {
        problems.push(format!(
            "{} aggregates with versions out of order or with gaps (e.g. {})",
            out_of_order.len(),
            out_of_order[0]
        ));
    }
    if streamed_totals != ledger_totals {
        problems.push(format!(
            "visit.completed on the stream (count, credits, fees) {streamed_totals:?} != ledger {ledger_totals:?}"
        ));
    }
    Ok(Findings {
        summary: format!(
            "{} messages for {} outbox events, {} aggregates, {} completions worth {} + {} fee",
            messages.len(),
            recorded.len(),
            versions.len(),
            streamed_totals.0,
            streamed_totals.1,
            streamed_totals.2
        ),
        problems,
        missing: missing_count,
    })
}
