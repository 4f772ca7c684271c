//! The delivery probe (the live feed and its deliveries alone) and the wait for the event
//! readers after the fixture.
use std::time::Duration;

use anyhow::Context;
use sea_orm::{ConnectionTrait, DatabaseConnection, Statement};

use super::{Stand, live};
use crate::bench::stats::Measurement;

impl Stand {
    /// The live feed and its deliveries alone, then the feed without them: synthetic events
    /// committed at a steady rate (so that the subscribers get about 100,000 deliveries a second in
    /// all, in commits of up to 20 events every 10 ms) for `seconds`, until the last delivery
    /// arrived; then the same once the subscribers are gone. The difference in the instances' CPU
    /// is what the deliveries cost. `None` without CPU meters (the subscribers are stopped either
    /// way).
    pub(crate) async fn probe_deliveries(
        &self,
        subscribers: live::Subscribers,
        seconds: u64,
    ) -> anyhow::Result<Option<String>> {
        let Some(meter) = &self.meter else {
            subscribers.stop();
            return Ok(None);
        };
        let count = subscribers.count();
        let per_second = (100_000 / count.max(1)).clamp(20, 2_000) as u64;
        let per_commit = (per_second / 100).clamp(1, 20);
        let commits = (seconds * per_second / per_commit).max(1);
        let spacing = Duration::from_secs(seconds).div_f64(commits as f64);
        let events = commits * per_commit;
        let expected = events * count as u64;

        subscribers.take();
        let before = meter.read();
        let started = std::time::Instant::now();
        self.commit_synthetic(commits, per_commit, spacing).await?;
        let mut delivered = Measurement::default();
        let mut quiet_since = std::time::Instant::now();
        while delivered.successes() < expected && quiet_since.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let more = subscribers.take();
            if more.successes() > 0 {
                quiet_since = std::time::Instant::now();
            }
            delivered.merge(&more);
        }
        let took = started.elapsed();
        let with_subscribers = meter.read() - before;
        subscribers.stop();

        // The same events with nobody to deliver them to, over the same time.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let before = meter.read();
        let started = std::time::Instant::now();
        self.commit_synthetic(commits, per_commit, spacing).await?;
        tokio::time::sleep(took.saturating_sub(started.elapsed())).await;
        let alone = meter.read() - before;

        let deliveries = delivered.successes().max(1) as f64;
        let extra = with_subscribers.instances.saturating_sub(alone.instances);
        Ok(Some(format!(
            "live deliveries alone ({events} synthetic events over {seconds} s to {count} openVisits \
             subscribers): {} of {expected} delivered, {:.0} deliveries/s, commit -> subscriber p50 \
             {:.1} ms p99 {:.1} ms; instances' CPU per delivery {:.2} µs (beyond the feed's own {:.1} \
             µs per event, measured again without subscribers); PostgreSQL {:.1} µs per event with \
             subscribers, {:.1} without (the inserts included)",
            delivered.successes(),
            deliveries / took.as_secs_f64(),
            delivered.percentile(0.5).as_secs_f64() * 1e3,
            delivered.percentile(0.99).as_secs_f64() * 1e3,
            extra.as_secs_f64() * 1e6 / deliveries,
            alone.instances.as_secs_f64() * 1e6 / events as f64,
            with_subscribers.server.as_secs_f64() * 1e6 / events as f64,
            alone.server.as_secs_f64() * 1e6 / events as f64,
        )))
    }

    async fn commit_synthetic(
        &self,
        commits: u64,
        per_commit: u64,
        spacing: Duration,
    ) -> anyhow::Result<()> {
        let mut ticks = tokio::time::interval(spacing);
        for _ in 0..commits {
            ticks.tick().await;
            live::commit_synthetic_requests(&self.db, per_commit as u32).await?;
        }
        Ok(())
    }
}

/// Waits until every reader with a checkpoint (the notifications consumer, the relay) has passed
/// the fixture's events, so that no round measures their catching up.
pub(super) async fn readers_caught_up(db: &DatabaseConnection) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let row = db
            .query_one_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT count(*) AS behind FROM event_checkpoints c \
                 WHERE EXISTS (SELECT 1 FROM outbox o WHERE (o.txid, o.position) > (c.txid, c.position))",
            ))
            .await?
            .context("no row")?;
        let behind: i64 = row.try_get("", "behind")?;
        if behind == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the event readers did not catch up with the fixture's events in 180 s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
