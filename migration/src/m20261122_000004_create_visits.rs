use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, r#"
CREATE TABLE IF NOT EXISTS visits (
    id                      uuid        PRIMARY KEY,
    member_id               uuid        NOT NULL REFERENCES users (id),
    pal_id                  uuid        NULL REFERENCES users (id),
    date                    date        NOT NULL,
    minutes                 integer     NOT NULL,
    status                  text        NOT NULL DEFAULT 'REQUESTED',
    idempotency_key         text        NULL,
    -- SHA-256 of the request's content, so a retry with the same key but other content is refused.
    idempotency_fingerprint bytea       NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT visits_minutes_positive CHECK (minutes > 0),
    CONSTRAINT visits_status_known CHECK (status IN ('REQUESTED', 'ACCEPTED', 'COMPLETED', 'CANCELLED')),
    CONSTRAINT visits_claimed_have_a_pal CHECK (status NOT IN ('ACCEPTED', 'COMPLETED') OR pal_id IS NOT NULL),
    CONSTRAINT visits_pal_is_not_the_member CHECK (pal_id IS NULL OR pal_id <> member_id),
    CONSTRAINT visits_member_idempotency_key UNIQUE (member_id, idempotency_key)
);
-- The outstanding-minutes sum and the member's own list.
CREATE INDEX IF NOT EXISTS visits_member_idx ON visits (member_id, status, date, id);
-- A pal's list.
CREATE INDEX IF NOT EXISTS visits_pal_idx ON visits (pal_id, date, id) WHERE pal_id IS NOT NULL;
-- Open visits pals can take.
CREATE INDEX IF NOT EXISTS visits_open_idx ON visits (date, id) WHERE status = 'REQUESTED';

CREATE TABLE IF NOT EXISTS visit_tasks (
    visit_id    uuid     NOT NULL REFERENCES visits (id) ON DELETE CASCADE,
    position    smallint NOT NULL,
    name        text     NOT NULL,
    description text     NULL,
    PRIMARY KEY (visit_id, position)
);
"#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(
            manager,
            "DROP TABLE IF EXISTS visit_tasks; DROP TABLE IF EXISTS visits;",
        )
        .await
    }
}
