//! Subscription cursors: where in the log a delivered event sits, so a client that reconnects
//! (another network, another instance) can go on from there with nothing lost or repeated.
//!
//! A cursor is opaque to clients: the event's [`Place`] in the log, when it happened (to tell a
//! cursor the log no longer reaches), and what it was made for (the root field, its arguments,
//! the user), signed with a key derived from `JWT_SECRET`. So a cursor from another deployment,
//! or one edited by hand, is malformed, and one made for another subscription or user is refused
//! rather than showing someone what a query would not.
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{
    error::AppError,
    events::{LogPosition, stretch::Place},
};

const VERSION: u8 = 1;
const SCOPE_BYTES: usize = 8;
const MAC_BYTES: usize = 16;
/// Version, two positions, index, time, scope.
const BODY_BYTES: usize = 1 + 16 + 16 + 4 + 8 + SCOPE_BYTES;
/// A cursor this close to the retention limit may already point at pruned events: what the log
/// holds is cut by commit time, which can run a little out of the log's order.
const RETENTION_MARGIN_SECONDS: i64 = 3600;

/// Signs and reads cursors for one deployment.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn from_secret(secret: &[u8]) -> Self {
        let mut digest = Sha256::new();
        digest.update(b"home-visits subscription cursor\0");
        digest.update(secret);
        Self(digest.finalize().into())
    }

    fn mac(&self, body: &[u8]) -> [u8; MAC_BYTES] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(body);
        let full = mac.finalize().into_bytes();
        let mut short = [0; MAC_BYTES];
        short.copy_from_slice(&full[..MAC_BYTES]);
        short
    }

    pub fn encode(&self, scope: &Scope, place: Place, occurred_at: DateTime<Utc>) -> String {
        let mut bytes = Vec::with_capacity(BODY_BYTES + MAC_BYTES);
        bytes.push(VERSION);
        for position in [place.from, place.to] {
            bytes.extend(position.txid.to_be_bytes());
            bytes.extend(position.position.to_be_bytes());
        }
        bytes.extend(place.index.to_be_bytes());
        bytes.extend(occurred_at.timestamp().to_be_bytes());
        bytes.extend(scope.0);
        let mac = self.mac(&bytes);
        bytes.extend(mac);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The place `cursor` names, if it is this deployment's, made for `scope`, and still within
    /// what the log keeps (`retention`: `OUTBOX_RETENTION_DAYS`).
    pub fn decode(
        &self,
        cursor: &str,
        scope: &Scope,
        retention: Option<std::time::Duration>,
        now: DateTime<Utc>,
    ) -> Result<Place, AppError> {
        let malformed = || AppError::bad_input("after", "not a cursor this service gave out");
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor.as_bytes())
            .map_err(|_| malformed())?;
        if bytes.len() != BODY_BYTES + MAC_BYTES || bytes[0] != VERSION {
            return Err(malformed());
        }
        let (body, mac) = bytes.split_at(BODY_BYTES);
        // Not a secret comparison in the usual sense, but constant time costs nothing here.
        if !constant_time_eq(&self.mac(body), mac) {
            return Err(malformed());
        }
        let mut reader = Reader(&body[1..]);
        let from = reader.position();
        let to = reader.position();
        let index = u32::from_be_bytes(reader.take());
        let occurred_at = i64::from_be_bytes(reader.take());
        let made_for: [u8; SCOPE_BYTES] = reader.take();
        if made_for != scope.0 {
            return Err(AppError::bad_input(
                "after",
                "this cursor was made for another subscription, other arguments or another user",
            ));
        }
        if let Some(retention) = retention {
            let kept_from = now.timestamp()
                - i64::try_from(retention.as_secs()).unwrap_or(i64::MAX)
                + RETENTION_MARGIN_SECONDS;
            if occurred_at < kept_from {
                return Err(AppError::CursorExpired);
            }
        }
        if from > to {
            return Err(malformed());
        }
        Ok(Place { from, to, index })
    }
}

fn constant_time_eq(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0_u8, |differ, (l, r)| differ | (l ^ r))
            == 0
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0; N];
        out.copy_from_slice(&self.0[..N]);
        self.0 = &self.0[N..];
        out
    }

    fn position(&mut self) -> LogPosition {
        LogPosition {
            txid: u64::from_be_bytes(self.take()),
            position: i64::from_be_bytes(self.take()),
        }
    }
}

/// What a cursor is good for: one root field with its arguments, for one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope([u8; SCOPE_BYTES]);

impl Scope {
    pub fn new(field: &str, arguments: &[&str], user: uuid::Uuid) -> Self {
        let mut digest = Sha256::new();
        for part in std::iter::once(field).chain(arguments.iter().copied()) {
            digest.update((part.len() as u64).to_be_bytes());
            digest.update(part.as_bytes());
        }
        digest.update(user.as_bytes());
        let mut scope = [0; SCOPE_BYTES];
        scope.copy_from_slice(&digest.finalize()[..SCOPE_BYTES]);
        Self(scope)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use uuid::Uuid;

    use super::*;
    use crate::error::ErrorCode;

    fn place() -> Place {
        Place {
            from: LogPosition {
                txid: 1_000,
                position: 7,
            },
            to: LogPosition {
                txid: 1_004,
                position: 12,
            },
            index: 3,
        }
    }

    fn code(result: Result<Place, AppError>) -> Option<ErrorCode> {
        result.err().map(|error| error.code())
    }

    #[test]
    fn a_cursor_reads_back_only_for_what_it_was_made_for() {
        let key = CursorKey::from_secret(b"one deployment's secret, long enough");
        let user = Uuid::now_v7();
        let scope = Scope::new("myVisits", &[], user);
        let now = Utc::now();
        let cursor = key.encode(&scope, place(), now);
        assert_eq!(key.decode(&cursor, &scope, None, now).ok(), Some(place()));
        let others = [
            Scope::new("openVisits", &[], user),
            Scope::new("myVisits", &[], Uuid::now_v7()),
            Scope::new("myVisits", &["x"], user),
        ];
        for other in others {
            assert_eq!(
                code(key.decode(&cursor, &other, None, now)),
                Some(ErrorCode::BadUserInput)
            );
        }
        let elsewhere = CursorKey::from_secret(b"another deployment's secret, as long");
        assert_eq!(
            code(elsewhere.decode(&cursor, &scope, None, now)),
            Some(ErrorCode::BadUserInput)
        );
        let mut edited = cursor.clone().into_bytes();
        edited[10] = if edited[10] == b'A' { b'B' } else { b'A' };
        let edited = String::from_utf8(edited).unwrap_or_default();
        for nonsense in ["", "not a cursor", &cursor[..20], &edited] {
            assert_eq!(
                code(key.decode(nonsense, &scope, None, now)),
                Some(ErrorCode::BadUserInput),
                "{nonsense:?}"
            );
        }
    }

    #[test]
    fn a_cursor_past_retention_has_expired() {
        let key = CursorKey::from_secret(b"one deployment's secret, long enough");
        let scope = Scope::new("openVisits", &[], Uuid::now_v7());
        let now = Utc::now();
        let week = Duration::from_secs(7 * 24 * 3600);
        let old = key.encode(&scope, place(), now - chrono::Duration::days(8));
        assert_eq!(
            code(key.decode(&old, &scope, Some(week), now)),
            Some(ErrorCode::CursorExpired)
        );
        assert!(key.decode(&old, &scope, None, now).is_ok(), "kept for good");
        let recent = key.encode(&scope, place(), now - chrono::Duration::days(1));
        assert!(key.decode(&recent, &scope, Some(week), now).is_ok());
    }
}
