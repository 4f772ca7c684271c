use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // What every consumer of the event log keeps: the events it has handled (written in the
        // same transaction as the handler's effect, so a redelivery changes nothing), the newest
        // version it has seen of each aggregate (older events are stale), and the events it gave
        // up on.
        crate::execute(
            manager,
            r#"
CREATE TABLE IF NOT EXISTS event_inbox (
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    handled_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);
CREATE TABLE IF NOT EXISTS event_aggregate_versions (
    consumer        text   NOT NULL,
    aggregate_type  text   NOT NULL,
    aggregate_id    uuid   NOT NULL,
    version         bigint NOT NULL,
    PRIMARY KEY (consumer, aggregate_type, aggregate_id)
);
CREATE TABLE IF NOT EXISTS event_dead_letters (
    id          bigserial   PRIMARY KEY,
    consumer    text        NOT NULL,
    event_id    uuid        NOT NULL,
    event       jsonb       NOT NULL,
    attempts    integer     NOT NULL,
    last_error  text        NOT NULL,
    failed_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT event_dead_letters_consumer_event_key UNIQUE (consumer, event_id)
);
"#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(
            manager,
            "DROP TABLE IF EXISTS event_dead_letters; DROP TABLE IF EXISTS event_aggregate_versions; \
             DROP TABLE IF EXISTS event_inbox",
        )
        .await
    }
}
