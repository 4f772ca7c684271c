use sea_orm::entity::prelude::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, EnumIter, DeriveActiveEnum)]
#[sea_orm(rs_type = "String", db_type = "Text")]
pub enum VisitStatus {
    #[sea_orm(string_value = "REQUESTED")]
    Requested,
    #[sea_orm(string_value = "ACCEPTED")]
    Accepted,
    #[sea_orm(string_value = "COMPLETED")]
    Completed,
    #[sea_orm(string_value = "CANCELLED")]
    Cancelled,
    /// Its time ran out before it was completed (see [`super::Deadlines`]).
    #[sea_orm(string_value = "EXPIRED")]
    Expired,
}

impl VisitStatus {
    /// Requested and accepted visits hold their member's minutes.
    pub const OUTSTANDING: [VisitStatus; 2] = [VisitStatus::Requested, VisitStatus::Accepted];
}

pub mod visit {
    use sea_orm::entity::prelude::*;

    use super::VisitStatus;
    use crate::domain::{Minutes, UserId, VisitId};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "visits")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: VisitId,
        pub member_id: UserId,
        pub pal_id: Option<UserId>,
        pub date: Date,
        pub minutes: Minutes,
        pub status: VisitStatus,
        pub idempotency_key: Option<String>,
        pub idempotency_fingerprint: Option<Vec<u8>>,
        pub created_at: DateTimeUtc,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod task {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "visit_tasks")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub visit_id: Uuid,
        #[sea_orm(primary_key, auto_increment = false)]
        pub position: i16,
        pub name: String,
        pub description: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

impl visit::Model {
    /// The visit as its events carry it.
    pub fn state(&self) -> crate::events::catalogue::VisitState {
        use sea_orm::ActiveEnum;
        crate::events::catalogue::VisitState {
            visit_id: self.id,
            member_id: self.member_id,
            pal_id: self.pal_id,
            date: self.date,
            minutes: self.minutes,
            status: self.status.to_value(),
        }
    }
}
