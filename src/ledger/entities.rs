pub mod balance {
    use sea_orm::entity::prelude::*;

    use crate::domain::{Minutes, UserId};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "balances")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: UserId,
        pub minutes: Minutes,
        pub starting_minutes: Minutes,
        pub updated_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub mod transaction {
    use sea_orm::entity::prelude::*;

    use crate::domain::{Minutes, UserId, VisitId};

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "transactions")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: Uuid,
        /// The visit this pays for; the ledger treats it as an opaque reference.
        pub visit_id: VisitId,
        pub member_id: UserId,
        pub pal_id: UserId,
        pub minutes: Minutes,
        pub pal_credit: Minutes,
        pub fee: Minutes,
        pub created_at: DateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}
