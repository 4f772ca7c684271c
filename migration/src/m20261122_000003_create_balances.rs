use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The only place minutes live. `starting_minutes` is kept so the books can be audited:
        // every balance must equal its grant minus debits plus credits.
        crate::execute(
            manager,
            r#"
CREATE TABLE IF NOT EXISTS balances (
    user_id          uuid        PRIMARY KEY REFERENCES users (id),
    minutes          integer     NOT NULL,
    starting_minutes integer     NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT balances_minutes_non_negative CHECK (minutes >= 0),
    CONSTRAINT balances_starting_minutes_non_negative CHECK (starting_minutes >= 0)
);
"#,
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, "DROP TABLE IF EXISTS balances").await
    }
}
