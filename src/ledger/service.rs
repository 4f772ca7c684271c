use chrono::Utc;
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait};
use uuid::Uuid;

use super::entities::balance;
use crate::error::AppError;

/// Opens a user's balance with their starting grant. Runs inside the registration transaction.
pub async fn open_balance(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    starting_minutes: i32,
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
    user_id: Uuid,
) -> Result<Option<i32>, AppError> {
    Ok(balance::Entity::find_by_id(user_id)
        .one(conn)
        .await?
        .map(|balance| balance.minutes))
}
