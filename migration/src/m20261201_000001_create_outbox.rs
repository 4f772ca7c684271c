use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The event log. `position` numbers rows as they are inserted, `txid` names the writing
        // transaction: readers go in (txid, position) order below the oldest running transaction,
        // which a sequence alone cannot give (see src/events/log.rs).
        crate::execute(manager, r#"
CREATE TABLE IF NOT EXISTS outbox (
    position           bigserial   PRIMARY KEY,
    txid               xid8        NOT NULL DEFAULT pg_current_xact_id(),
    id                 uuid        NOT NULL,
    type               text        NOT NULL,
    version            integer     NOT NULL,
    aggregate_type     text        NOT NULL,
    aggregate_id       uuid        NOT NULL,
    aggregate_version  bigint      NOT NULL,
    occurred_at        timestamptz NOT NULL DEFAULT now(),
    traceparent        text,
    payload            jsonb       NOT NULL,
    CONSTRAINT outbox_id_key UNIQUE (id),
    CONSTRAINT outbox_aggregate_version_key UNIQUE (aggregate_type, aggregate_id, aggregate_version),
    CONSTRAINT outbox_versions_positive CHECK (version > 0 AND aggregate_version > 0)
);
CREATE INDEX IF NOT EXISTS outbox_log_order ON outbox (txid, position);
CREATE INDEX IF NOT EXISTS outbox_occurred_at ON outbox (occurred_at);

-- Where each reader of the log (the relay, consumers) has got to.
CREATE TABLE IF NOT EXISTS event_checkpoints (
    name        text        PRIMARY KEY,
    txid        xid8        NOT NULL,
    position    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
"#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(
            manager,
            "DROP TABLE IF EXISTS event_checkpoints; DROP TABLE IF EXISTS outbox",
        )
        .await
    }
}
