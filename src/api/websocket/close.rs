//! How a socket ends, and the close codes the protocol and the clients read.
//!
//! The `44xx` codes are `graphql-transport-ws`'s: on 4401 a client gives up, on 4403 it reconnects
//! with a fresh token. The `10xx` codes are RFC 6455's: on 1013 a client reconnects, perhaps to
//! another instance.

/// Why the server closes a socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseCode {
    /// 1000: the client stopped answering pings.
    Normal,
    /// 1001: the instance is shutting down.
    GoingAway,
    /// 1008: more subscriptions on one socket than allowed.
    PolicyViolation,
    /// 1009: a message over `MAX_BODY_BYTES`.
    MessageTooBig,
    /// 1013: the instance is full, the client fell behind or stopped reading, or the token
    /// cannot be checked now.
    TryAgainLater,
    /// 4400: a message that is not the protocol's.
    BadMessage,
    /// 4401: no credentials, or a subscribe before the ack.
    Unauthorized,
    /// 4403: a token that is invalid, expired or revoked.
    Forbidden,
    /// 4406: another subprotocol.
    SubprotocolNotAcceptable,
    /// 4408: no `connection_init` in time.
    InitTimeout,
    /// 4409: a subscription id already in use.
    SubscriberExists,
    /// 4429: a second `connection_init`.
    TooManyInitialisationRequests,
}

impl CloseCode {
    pub const fn number(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::GoingAway => 1001,
            Self::PolicyViolation => 1008,
            Self::MessageTooBig => 1009,
            Self::TryAgainLater => 1013,
            Self::BadMessage => 4400,
            Self::Unauthorized => 4401,
            Self::Forbidden => 4403,
            Self::SubprotocolNotAcceptable => 4406,
            Self::InitTimeout => 4408,
            Self::SubscriberExists => 4409,
            Self::TooManyInitialisationRequests => 4429,
        }
    }
}

/// How a socket ends.
pub enum Ending {
    /// The client went away: nothing to send.
    Gone,
    /// Closed by the server with this code and reason.
    Close(CloseCode, String),
}

/// How many messages of the largest size a socket may buffer before tungstenite itself refuses.
pub const BUFFERED_MESSAGES: usize = 4;

/// RFC 6455's answer to a message over `MAX_BODY_BYTES`, so the client can tell it from a fault.
pub fn too_big() -> Ending {
    Ending::Close(
        CloseCode::MessageTooBig,
        "Message too big: a message holds at most MAX_BODY_BYTES".into(),
    )
}

/// Whether tungstenite refused what it read for its size.
pub fn is_over_capacity(error: axum::Error) -> bool {
    error
        .into_inner()
        .downcast_ref::<tungstenite::Error>()
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)))
}
