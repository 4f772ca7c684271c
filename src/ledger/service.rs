use std::collections::HashMap;

use chrono::{DateTime, SubsecRound, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, Order, QueryFilter,
    QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::entities::{balance, transaction};
use crate::{
    domain::{Minutes, UserId, VisitId},
    error::{AppError, violated_constraint},
    events::catalogue::TransferRecorded,
    locking::for_update,
    paging::{Cursor, Keyset, Page},
};

/// How a visit's minutes divide between the pal and the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Split {
    pub pal_credit: Minutes,
    pub fee: Minutes,
}

/// The fee rule: the pal is credited `minutes * (100 - overhead) / 100`, rounded half up, and the
/// rest is the fee. Integer arithmetic only, so no minute is ever lost or made up.
pub fn split(minutes: Minutes, overhead_percent: i32) -> Split {
    let pal_credit = Minutes((minutes.0 * (100 - overhead_percent) + 50) / 100);
    Split {
        pal_credit,
        fee: minutes - pal_credit,
    }
}

/// Opens a user's balance with their starting grant. Runs inside the registration transaction.
pub async fn open_balance(
    conn: &impl ConnectionTrait,
    user_id: UserId,
    starting_minutes: Minutes,
) -> Result<(), AppError> {
    balance::Entity::insert(balance::ActiveModel {
        user_id: Set(user_id),
        minutes: Set(starting_minutes),
        starting_minutes: Set(starting_minutes),
        updated_at: Set(Utc::now()),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn balance_of(
    conn: &impl ConnectionTrait,
    user_id: UserId,
) -> Result<Option<Minutes>, AppError> {
    Ok(balance::Entity::find_by_id(user_id)
        .select_only()
        .column(balance::Column::Minutes)
        .into_tuple::<Minutes>()
        .one(conn)
        .await?)
}

/// Minutes of many users at once (for batch loading), without locks.
pub async fn balances_of(
    conn: &impl ConnectionTrait,
    user_ids: Vec<UserId>,
) -> Result<HashMap<UserId, Minutes>, AppError> {
    let rows: Vec<(UserId, Minutes)> = balance::Entity::find()
        .select_only()
        .column(balance::Column::UserId)
        .column(balance::Column::Minutes)
        .filter(balance::Column::UserId.is_in(user_ids))
        .into_tuple()
        .all(conn)
        .await?;
    Ok(rows.into_iter().collect())
}

/// Locks the balance rows of `user_ids` and returns their minutes by user. One statement, ordered
/// by user id, so any two transactions lock balances in the same order and cannot deadlock.
pub async fn lock_balances(
    conn: &impl ConnectionTrait,
    user_ids: &[UserId],
) -> Result<HashMap<UserId, Minutes>, AppError> {
    // Held until commit: no other debit or booking against these balances can interleave.
    let rows = for_update(
        balance::Entity::find()
            .filter(balance::Column::UserId.is_in(user_ids.iter().copied()))
            .order_by_asc(balance::Column::UserId),
    )
    .all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.user_id, row.minutes))
        .collect())
}

/// A payment for a completed visit, from its member to its pal.
pub struct Transfer {
    pub visit_id: VisitId,
    pub member_id: UserId,
    pub pal_id: UserId,
    pub minutes: Minutes,
}

/// A payment ready to ride in the statement of the change it pays for, as two CTEs (`moved`:
/// the member debited and the pal credited less the fee; `paid`: the transaction recorded), on
/// balance rows the caller has locked with [`lock_balances`]. Everything it records is decided
/// here, before the statement, so the caller can build its events from [`Self::transaction`] and
/// send the payment, the change and the events as one statement: one round trip where a
/// statement of the ledger's own and one of the caller's were two.
pub struct TransferStatement {
    /// The transaction the statement records.
    pub transaction: transaction::Model,
    /// The values of [`Self::ctes`]' placeholders, in order.
    pub values: Vec<sea_orm::Value>,
}

impl TransferStatement {
    pub fn new(transfer: Transfer, overhead_percent: i32) -> Self {
        let Split { pal_credit, fee } = split(transfer.minutes, overhead_percent);
        let transaction = transaction::Model {
            id: Uuid::now_v7(),
            visit_id: transfer.visit_id,
            member_id: transfer.member_id,
            pal_id: transfer.pal_id,
            minutes: transfer.minutes,
            pal_credit,
            fee,
            // What PostgreSQL keeps of it, so the answer and a later read agree.
            created_at: Utc::now().trunc_subsecs(6),
        };
        let values = vec![
            transaction.id.into(),
            transaction.visit_id.into(),
            transaction.member_id.into(),
            transaction.pal_id.into(),
            transaction.minutes.into(),
            transaction.pal_credit.into(),
            transaction.fee.into(),
            transaction.created_at.into(),
        ];
        Self {
            transaction,
            values,
        }
    }

    /// `moved AS (...), paid AS (...)`, for the caller's `WITH`. The balances' UPDATE runs whether
    /// or not anything reads it (a data-modifying CTE always does), and a failed CHECK or UNIQUE
    /// in either part fails the whole statement: see [`Self::refusal`].
    /// `first`: the number of the first placeholder they use.
    pub fn ctes(&self, first: usize) -> String {
        let p = |n: usize| format!("${}", first - 1 + n);
        format!(
            "moved AS (UPDATE balances SET minutes = minutes + CASE WHEN user_id = {member} THEN -{minutes} \
             ELSE {credit} END, updated_at = {at} WHERE user_id IN ({member}, {pal})), \
             paid AS (INSERT INTO transactions (id, visit_id, member_id, pal_id, minutes, pal_credit, fee, created_at) \
             VALUES ({id}, {visit}, {member}, {pal}, {minutes}, {credit}, {fee}, {at}))",
            id = p(1),
            visit = p(2),
            member = p(3),
            pal = p(4),
            minutes = p(5),
            credit = p(6),
            fee = p(7),
            at = p(8),
        )
    }

    /// What a failure of the statement means for the payment, if it was the payment's.
    pub fn refusal(&self, error: &sea_orm::DbErr) -> Option<AppError> {
        match violated_constraint(error).as_deref() {
            Some("transactions_visit_id_key") => {
                Some(AppError::Conflict("this visit has already been paid for"))
            }
            Some("balances_minutes_non_negative") => Some(AppError::InsufficientMinutes {
                requested: self.transaction.minutes,
                available: Minutes(0),
            }),
            _ => None,
        }
    }
}

/// What a [`TransferStatement`] recorded, as the ledger's event says it.
pub fn transfer_recorded(transaction: &transaction::Model) -> TransferRecorded {
    TransferRecorded {
        transaction_id: transaction.id,
        visit_id: transaction.visit_id,
        member_id: transaction.member_id,
        pal_id: transaction.pal_id,
        minutes: transaction.minutes,
        pal_credit: transaction.pal_credit,
        fee: transaction.fee,
    }
}

/// Where a page of transactions starts: newest first, so after this `created_at` and id.
pub type TransactionCursor = Cursor<DateTime<Utc>>;

fn involving(user_id: UserId) -> sea_orm::Select<transaction::Entity> {
    transaction::Entity::find().filter(
        Condition::any()
            .add(transaction::Column::MemberId.eq(user_id))
            .add(transaction::Column::PalId.eq(user_id)),
    )
}

/// The user's transactions, as member or pal, newest first.
pub async fn transactions_of(
    conn: &impl ConnectionTrait,
    user_id: UserId,
    first: u64,
    after: Option<TransactionCursor>,
) -> Result<Page<transaction::Model>, AppError> {
    let involving_user = involving(user_id);
    let newest_first = Keyset {
        sort: transaction::Column::CreatedAt,
        id: transaction::Column::Id,
        order: Order::Desc,
    };
    Ok(newest_first
        .fetch(conn, involving_user, first, after)
        .await?)
}

/// How many transactions the user is part of, as member or pal.
pub async fn count_transactions_of(
    conn: &impl ConnectionTrait,
    user_id: UserId,
) -> Result<u64, AppError> {
    Ok(sea_orm::PaginatorTrait::count(involving(user_id), conn).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pal_credit_rounds_half_up() {
        assert_eq!(
            split(Minutes(33), 15),
            Split {
                pal_credit: Minutes(28),
                fee: Minutes(5)
            }
        );
        assert_eq!(
            split(Minutes(35), 15),
            Split {
                pal_credit: Minutes(30),
                fee: Minutes(5)
            }
        );
        assert_eq!(
            split(Minutes(10), 15),
            Split {
                pal_credit: Minutes(9),
                fee: Minutes(1)
            }
        );
        assert_eq!(
            split(Minutes(1), 15),
            Split {
                pal_credit: Minutes(1),
                fee: Minutes(0)
            }
        );
        assert_eq!(
            split(Minutes(60), 15),
            Split {
                pal_credit: Minutes(51),
                fee: Minutes(9)
            }
        );
    }

    #[test]
    fn credit_and_fee_always_add_up_to_the_minutes() {
        for overhead in [0, 1, 15, 50, 99, 100] {
            for minutes in 1..=480 {
                let Split { pal_credit, fee } = split(Minutes(minutes), overhead);
                assert_eq!(pal_credit + fee, Minutes(minutes));
                assert!(
                    pal_credit >= Minutes(0) && fee >= Minutes(0),
                    "{minutes} at {overhead}%"
                );
            }
        }
    }

    #[test]
    fn the_extremes_of_the_overhead_give_everything_to_one_side() {
        assert_eq!(
            split(Minutes(120), 0),
            Split {
                pal_credit: Minutes(120),
                fee: Minutes(0)
            }
        );
        assert_eq!(
            split(Minutes(120), 100),
            Split {
                pal_credit: Minutes(0),
                fee: Minutes(120)
            }
        );
    }
}
