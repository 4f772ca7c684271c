use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The notifications context's read model, built only from events: no foreign key into
        // other contexts' tables, names are looked up at read time. One notification per
        // (event, recipient), so replaying the log cannot duplicate one.
        crate::execute(manager, r#"
CREATE TABLE IF NOT EXISTS notifications (
    id            uuid        PRIMARY KEY,
    recipient_id  uuid        NOT NULL,
    kind          text        NOT NULL,
    visit_id      uuid        NOT NULL,
    actor_id      uuid,
    minutes       integer     NOT NULL,
    event_id      uuid        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    read_at       timestamptz,
    CONSTRAINT notifications_event_recipient_key UNIQUE (event_id, recipient_id),
    CONSTRAINT notifications_kind_valid CHECK (kind IN
        ('VISIT_ACCEPTED', 'VISIT_COMPLETED', 'VISIT_CANCELLED', 'VISIT_EXPIRED', 'MINUTES_EARNED'))
);
CREATE INDEX IF NOT EXISTS notifications_by_recipient ON notifications (recipient_id, occurred_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS notifications_unread ON notifications (recipient_id) WHERE read_at IS NULL;
"#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, "DROP TABLE IF EXISTS notifications").await
    }
}
