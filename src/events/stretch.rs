//! Stretches of the log: what one reader read at once, `(from, to]`, put in aggregate order.
//! Every event the live feed hands on carries its [`Place`] in such a stretch. Read again, a
//! stretch gives the same events in the same order (nothing new can appear at or below `to`, see
//! `log`), so a place is a point a subscription can resume from, exactly once, even where
//! aggregate order moved an event ahead of one that precedes it in the log.
use std::fmt;

use sea_orm::{ConnectionTrait, DbErr};

use super::log::{self, LogPosition, StoredEvent};

/// Where an event sits: the stretch `(from, to]` it was handed on with, and its index there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub from: LogPosition,
    pub to: LogPosition,
    pub index: u32,
}

impl Place {
    /// A stretch of one event, for an event whose stretch is not known (a broker message from a
    /// relay that did not say): resuming after it reads on from the event itself.
    pub fn alone(at: LogPosition) -> Self {
        Self {
            from: at,
            to: at,
            index: 0,
        }
    }

    /// The text form (`from to index`, positions as `txid.position`) that travels in broker
    /// headers and notifications.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(' ');
        let from = parse_position(parts.next()?)?;
        let to = parse_position(parts.next()?)?;
        let index = parts.next()?.parse().ok()?;
        (parts.next().is_none() && from <= to).then_some(Self { from, to, index })
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{} {}.{} {}",
            self.from.txid, self.from.position, self.to.txid, self.to.position, self.index
        )
    }
}

pub fn parse_position(text: &str) -> Option<LogPosition> {
    let (txid, position) = text.split_once('.')?;
    Some(LogPosition {
        txid: txid.parse().ok()?,
        position: position.parse().ok()?,
    })
}

/// The broker header that carries an event's [`Place`].
pub const PLACE_HEADER: &str = "Log-Place";

/// Every event in `(from, to]`, in the order a reader that read them at once handed them on.
/// Only for stretches a reader already read: everything up to `to` is readable then.
pub async fn read(
    conn: &impl ConnectionTrait,
    from: LogPosition,
    to: LogPosition,
) -> Result<Vec<StoredEvent>, DbErr> {
    if to <= from {
        return Ok(Vec::new());
    }
    let mut events = log::read_through(conn, from, to).await?;
    log::in_aggregate_order(&mut events);
    Ok(events)
}

/// Everything readable after `after`, read at once (a page at a time, at most `most` events) and
/// put in order, with where it ends; `None` when nothing is readable yet.
pub async fn read_on(
    conn: &impl ConnectionTrait,
    after: LogPosition,
    page: u64,
    most: usize,
) -> Result<Option<(Vec<StoredEvent>, LogPosition)>, DbErr> {
    let mut events: Vec<StoredEvent> = Vec::new();
    let mut end = after;
    loop {
        let read = log::read_after(conn, end, page).await?;
        let full = read.len() as u64 == page;
        if let Some(last) = read.last() {
            end = last.log_position();
        }
        events.extend(read);
        if !full || events.len() >= most {
            break;
        }
    }
    if events.is_empty() {
        return Ok(None);
    }
    log::in_aggregate_order(&mut events);
    Ok(Some((events, end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_place_survives_its_text_form_and_nonsense_is_refused() {
        let place = Place {
            from: LogPosition {
                txid: 812,
                position: 40,
            },
            to: LogPosition {
                txid: 815,
                position: 39,
            },
            index: 2,
        };
        assert_eq!(Place::parse(&place.to_string()), Some(place));
        for nonsense in [
            "",
            "1.2 3.4",
            "1.2 3.4 x",
            "1.2 3.4 5 6",
            "3.4 1.2 0",
            "a.b c.d 0",
        ] {
            assert_eq!(Place::parse(nonsense), None, "{nonsense:?}");
        }
    }
}
