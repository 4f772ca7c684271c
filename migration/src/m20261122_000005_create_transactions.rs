use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One row per completed visit: the member paid `minutes`, the pal got `pal_credit`, the
        // service kept `fee`. The unique visit_id is the last line of defence against paying twice.
        crate::execute(manager, r#"
CREATE TABLE IF NOT EXISTS transactions (
    id          uuid        PRIMARY KEY,
    visit_id    uuid        NOT NULL REFERENCES visits (id),
    member_id   uuid        NOT NULL REFERENCES users (id),
    pal_id      uuid        NOT NULL REFERENCES users (id),
    minutes     integer     NOT NULL,
    pal_credit  integer     NOT NULL,
    fee         integer     NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT transactions_visit_id_key UNIQUE (visit_id),
    CONSTRAINT transactions_minutes_positive CHECK (minutes > 0),
    CONSTRAINT transactions_split_adds_up CHECK (pal_credit >= 0 AND fee >= 0 AND pal_credit + fee = minutes),
    CONSTRAINT transactions_parties_differ CHECK (member_id <> pal_id)
);
CREATE INDEX IF NOT EXISTS transactions_member_idx ON transactions (member_id, created_at, id);
CREATE INDEX IF NOT EXISTS transactions_pal_idx ON transactions (pal_id, created_at, id);
"#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, "DROP TABLE IF EXISTS transactions").await
    }
}
