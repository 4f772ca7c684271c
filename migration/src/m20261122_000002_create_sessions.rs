use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // A session is one login; each refresh token it ever issued stays here (hashed) so a replayed,
        // already-rotated token is recognised and revokes the whole session.
        crate::execute(
            manager,
            r#"
CREATE TABLE IF NOT EXISTS sessions (
    id           uuid        PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES users (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz NULL
);
CREATE INDEX IF NOT EXISTS sessions_user_id_idx ON sessions (user_id);

CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash   bytea       PRIMARY KEY,
    session_id   uuid        NOT NULL REFERENCES sessions (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    rotated_at   timestamptz NULL
);
CREATE INDEX IF NOT EXISTS refresh_tokens_session_id_idx ON refresh_tokens (session_id);
"#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(
            manager,
            "DROP TABLE IF EXISTS refresh_tokens; DROP TABLE IF EXISTS sessions;",
        )
        .await
    }
}
