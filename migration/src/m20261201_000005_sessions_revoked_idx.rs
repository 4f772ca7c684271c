use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Each instance loads the sessions revoked within one access token lifetime when its
        // revocation listener (re)connects: a range of this index, however many sessions there are.
        crate::execute(
            manager,
            "CREATE INDEX IF NOT EXISTS sessions_revoked_at_idx ON sessions (revoked_at) WHERE revoked_at IS NOT NULL;",
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(manager, "DROP INDEX IF EXISTS sessions_revoked_at_idx;").await
    }
}
