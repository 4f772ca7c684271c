//! Writing to a socket: every write has a deadline, so a client that stops reading is cut off
//! rather than buffered for; messages ready together go out in one write.
use axum::extract::ws::{CloseFrame, Message};
use futures::SinkExt;
use serde_json::Value;

use super::{
    Connection, SEND_TIMEOUT,
    close::{CloseCode, Ending},
};

impl Connection {
    /// Sends one message; `Err` (the socket is gone, or the client stopped reading) ends it.
    pub(super) async fn send(&mut self, message: Value) -> Result<(), Ending> {
        self.queue(message.to_string()).await?;
        self.flush().await
    }

    /// Queues one message, written at the next [`flush`](Self::flush) (or sooner, when the
    /// socket's write buffer fills).
    pub(super) async fn queue(&mut self, text: String) -> Result<(), Ending> {
        Self::in_time(
            tokio::time::timeout(SEND_TIMEOUT, self.sink.feed(Message::Text(text.into()))).await,
        )
    }

    pub(super) async fn flush(&mut self) -> Result<(), Ending> {
        Self::in_time(tokio::time::timeout(SEND_TIMEOUT, self.sink.flush()).await)
    }

    /// A write's outcome: `Err` when the socket is gone, or the client stopped reading.
    fn in_time<E>(
        outcome: Result<Result<(), E>, tokio::time::error::Elapsed>,
    ) -> Result<(), Ending> {
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Ending::Gone),
            Err(_) => Err(Ending::Close(
                CloseCode::TryAgainLater,
                "not reading; reconnect".into(),
            )),
        }
    }

    pub(super) async fn close(&mut self, code: CloseCode, reason: &str) {
        // A reason is at most 123 bytes on the wire.
        let mut reason = reason.to_string();
        while reason.len() > 123 {
            reason.pop();
        }
        let frame = CloseFrame {
            code: code.number(),
            reason: reason.into(),
        };
        // One deadline for the frame and the close: a peer that stops reading cannot hold the
        // socket (and its task) open.
        let _ = tokio::time::timeout(SEND_TIMEOUT, async {
            let _ = self.sink.send(Message::Close(Some(frame))).await;
            let _ = self.sink.close().await;
        })
        .await;
    }
}
