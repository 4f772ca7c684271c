use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // EXPIRED (time ran out), and indexes shaped like the lists and sums that read visits, so
        // each reads only the rows it returns or counts however many visits there are.
        crate::execute(manager, r#"
ALTER TABLE visits DROP CONSTRAINT IF EXISTS visits_status_known;
ALTER TABLE visits ADD CONSTRAINT visits_status_known
    CHECK (status IN ('REQUESTED', 'ACCEPTED', 'COMPLETED', 'CANCELLED', 'EXPIRED'));
-- Nothing sets a pal on a request (accepting makes it ACCEPTED, a pal leaving clears it), so
-- "open" and "mine as a pal" never overlap; the lists count on that.
ALTER TABLE visits ADD CONSTRAINT visits_requested_have_no_pal CHECK (status <> 'REQUESTED' OR pal_id IS NULL);

-- A member's list in (date, id) order, and their outstanding sum: that reads only the dates not
-- yet expired, straight from the index (status and minutes ride along).
DROP INDEX IF EXISTS visits_member_idx;
CREATE INDEX IF NOT EXISTS visits_member_date_idx ON visits (member_id, date, id) INCLUDE (status, minutes);

-- The open list (soonest first) and its count: the member rides along so "not mine" is decided
-- in the index, without a visit to the table.
DROP INDEX IF EXISTS visits_open_idx;
CREATE INDEX IF NOT EXISTS visits_open_idx ON visits (date, id) INCLUDE (member_id) WHERE status = 'REQUESTED';

-- The sweeper's other half: accepted visits whose time ran out.
CREATE INDEX IF NOT EXISTS visits_accepted_date_idx ON visits (date) WHERE status = 'ACCEPTED';
"#).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::execute(
            manager,
            r#"
DROP INDEX IF EXISTS visits_accepted_date_idx;
DROP INDEX IF EXISTS visits_open_idx;
CREATE INDEX IF NOT EXISTS visits_open_idx ON visits (date, id) WHERE status = 'REQUESTED';
DROP INDEX IF EXISTS visits_member_date_idx;
CREATE INDEX IF NOT EXISTS visits_member_idx ON visits (member_id, status, date, id);
ALTER TABLE visits DROP CONSTRAINT IF EXISTS visits_requested_have_no_pal;
ALTER TABLE visits DROP CONSTRAINT IF EXISTS visits_status_known;
ALTER TABLE visits ADD CONSTRAINT visits_status_known
    CHECK (status IN ('REQUESTED', 'ACCEPTED', 'COMPLETED', 'CANCELLED'));
"#,
        )
        .await
    }
}
