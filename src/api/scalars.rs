use async_graphql::{ID, InputValueError, InputValueResult, Scalar, ScalarType, Value};
use chrono::NaiveDate;
use uuid::Uuid;

use crate::error::AppError;

/// A calendar date, `YYYY-MM-DD` (RFC 3339's `full-date`, ISO 8601's extended calendar date).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(
    name = "Date",
    specified_by_url = "https://datatracker.ietf.org/doc/html/rfc3339#section-5.6"
)]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("expected a date as YYYY-MM-DD")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// An `ID` argument as the uuid it must be; `field` names the argument in the error.
pub fn parse_id(id: &ID, field: &str) -> Result<Uuid, AppError> {
    id.parse()
        .map_err(|_| AppError::bad_input(field, "is not a valid id"))
}

/// A visit's id from the client.
pub fn parse_visit_id(id: &ID, field: &str) -> Result<crate::domain::VisitId, AppError> {
    parse_id(id, field).map(crate::domain::VisitId)
}
