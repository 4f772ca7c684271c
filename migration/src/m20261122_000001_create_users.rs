use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Email is NULL once an account is deactivated and scrubbed; the unique index ignores NULLs,
        // so a scrubbed address can register again.
        crate::execute(
            manager,
            r#"
CREATE TABLE IF NOT EXISTS users (
    id             uuid        PRIMARY KEY,
    email          text        NULL,
    password_hash  text        NOT NULL,
    first_name     text        NOT NULL,
    last_name      text        NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    deactivated_at timestamptz NULL,
    CONSTRAINT users_email_lower_case CHECK (email = lower(btrim(email))),
    CONSTRAINT users_email_key UNIQUE (email)
);
"#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, "DROP TABLE IF EXISTS users").await
    }
}
