//! GraphQL over WebSocket: the `graphql-transport-ws` protocol on `/graphql`, as the standard
//! clients (`graphql-ws`, Apollo's `GraphQLWsLink`, urql) speak it.
//!
//! The protocol is driven here rather than by async-graphql's own WebSocket adapter, which closes
//! with codes the protocol does not define (1002 for a refused `connection_init`, 1011 for a
//! subscribe before the ack), has no initialisation timeout, replaces a subscription whose id is
//! already in use, sends no pings and cannot be told to close a socket whose session was revoked.
//! Execution is still async-graphql's (`Schema::execute_stream`).
//! Its close codes are [`CloseCode`]'s.
mod close;
mod limits;
mod messages;
mod sending;
mod session;

use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant},
};

use async_graphql::Response;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use chrono::{DateTime, Utc};
use futures::{FutureExt, SinkExt, Stream, StreamExt, stream::SplitSink};
use serde_json::{Value, json};
use tokio_stream::StreamMap;

use self::{
    close::{BUFFERED_MESSAGES, CloseCode, Ending, is_over_capacity, too_big},
    limits::Slot,
    messages::{ClientMessage, SubscribePayload},
    session::Session,
};
use super::{
    context::ApiError,
    errors::with_error_codes,
    input,
    persisted::{self, PersistedQueries},
    request_data,
    schema::AppSchema,
    subscription_events::SocketSignals,
    variables,
};
use crate::{error::AppError, events::feed, state::AppState};

pub use limits::LiveLimits;

pub const PROTOCOL: &str = "graphql-transport-ws";
/// A client that stops reading is cut off after this long rather than buffered for.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// What tungstenite reads into per socket. Allocated for every socket, idle or not, and client
/// messages are small (a larger one takes a few reads): 8 KiB here cost 7 KB of resident memory
/// per idle socket (the bench's idle subscriptions: 28.2 -> 21.2 KB each).
const READ_BUFFER: usize = 1024;
/// How much tungstenite gathers before it writes: a burst of events goes out in writes this big.
/// Grown only when messages are written, so an idle socket does not pay for it.
const WRITE_BUFFER: usize = 8 * 1024;
/// Messages ready at once that go out in one write at most.
const COALESCED_AT_MOST: usize = 64;
const FELL_BEHIND: &str = "fell behind the live feed; reconnect and re-read by query";

/// Accepts the upgrade; everything after happens on the socket.
pub fn upgrade(
    upgrade: WebSocketUpgrade,
    schema: AppSchema,
    app: Arc<AppState>,
    limits: Arc<LiveLimits>,
    persisted: Arc<PersistedQueries>,
    client: IpAddr,
) -> axum::response::Response {
    // The limit is the service's own (see `too_big`): tungstenite's, a few times larger, only
    // bounds what one socket may buffer. A message it refuses leaves its rest unread, and a socket
    // closed with unread data is reset, so the client would not see the 1009 in time.
    let buffered_at_most = app
        .config
        .server
        .max_body_bytes
        .get()
        .saturating_mul(BUFFERED_MESSAGES);
    let upgrade = upgrade
        .protocols([PROTOCOL])
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .max_message_size(buffered_at_most)
        .max_frame_size(buffered_at_most);
    let speaks_protocol = upgrade.selected_protocol().is_some();
    upgrade.on_upgrade(move |socket| async move {
        let (sink, stream) = socket.split();
        // Held until the socket is closed for good, close handshake included.
        let socket_slot = limits.slot(&app.config.live, false);
        let mut connection = Connection {
            sink,
            schema,
            app,
            limits,
            persisted,
            client,
        };
        let ending = match &socket_slot {
            Some(_) => connection.serve(stream, speaks_protocol).await,
            None => Err(Ending::Close(
                CloseCode::TryAgainLater,
                "this instance holds as many sockets as it may; try again".into(),
            )),
        };
        match ending {
            Err(Ending::Close(code, reason)) => connection.close(code, &reason).await,
            Err(Ending::Gone) => {}
            Ok(never) => match never {},
        }
        drop(socket_slot);
    })
}

type Operation = Pin<Box<dyn Stream<Item = Option<Response>> + Send>>;

struct Connection {
    sink: SplitSink<WebSocket, Message>,
    schema: AppSchema,
    app: Arc<AppState>,
    limits: Arc<LiveLimits>,
    /// Persisted and trusted documents, as for HTTP.
    persisted: Arc<PersistedQueries>,
    /// As trusted proxies vouch for it (see `client_address`).
    client: IpAddr,
}

impl Connection {
    /// Runs the protocol until the socket ends.
    async fn serve(
        &mut self,
        mut incoming: futures::stream::SplitStream<WebSocket>,
        speaks_protocol: bool,
    ) -> Result<Infallible, Ending> {
        if !speaks_protocol {
            return Err(Ending::Close(
                CloseCode::SubprotocolNotAcceptable,
                format!("Subprotocol not acceptable: use {PROTOCOL}"),
            ));
        }
        let live = self.app.config.live.clone();
        let signals = Arc::new(SocketSignals::default());
        let mut revocations = self.app.identity.sessions.revocations();
        let mut shutdown = self.app.shutdown.subscribe();
        // Opened while the instance was already shutting down: `changed` would never fire.
        if *shutdown.borrow_and_update() {
            return Err(Ending::Close(
                CloseCode::GoingAway,
                "the server is shutting down; reconnect".into(),
            ));
        }
        let init_deadline = tokio::time::sleep(live.connection_init_timeout);
        tokio::pin!(init_deadline);
        let mut pings = tokio::time::interval_at(
            tokio::time::Instant::now() + live.ping_interval,
            live.ping_interval,
        );
        let mut last_heard = Instant::now();
        let mut init_seen = false;
        let mut session: Option<Session> = None;
        let mut operations: StreamMap<String, Operation> = StreamMap::new();
        let mut started: HashMap<String, (bool, Slot)> = HashMap::new();

        loop {
            let expiry = session.as_ref().map(|session| session.expires_at);
            tokio::select! {
                message = incoming.next() => {
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(error)) => {
                            return Err(if is_over_capacity(error) { too_big() } else { Ending::Gone });
                        }
                        None => return Err(Ending::Gone),
                    };
                    last_heard = Instant::now();
                    let text = match message {
                        Message::Text(text) if text.len() > self.app.config.server.max_body_bytes.get() => {
                            return Err(too_big());
                        }
                        Message::Text(text) => text,
                        Message::Close(_) => {
                            // Sends the close reply tungstenite queued, so the client sees a clean close.
                            let _ = tokio::time::timeout(Duration::from_secs(1), self.sink.flush()).await;
                            return Err(Ending::Gone);
                        }
                        // Transport-level keep-alives are answered by the WebSocket layer.
                        Message::Ping(_) | Message::Pong(_) => continue,
                        Message::Binary(_) => {
                            return Err(Ending::Close(CloseCode::BadMessage, "Invalid message received: binary frames carry no protocol messages".into()));
                        }
                    };
                    let message: ClientMessage = match serde_json::from_str(text.as_str()) {
                        Ok(message) => message,
                        Err(error) => {
                            return Err(Ending::Close(CloseCode::BadMessage, format!("Invalid message received: {error}")));
                        }
                    };
                    match message {
                        ClientMessage::ConnectionInit { payload } => {
                            if init_seen {
                                return Err(Ending::Close(CloseCode::TooManyInitialisationRequests, "Too many initialisation requests".into()));
                            }
                            init_seen = true;
                            match Session::open(&self.app, payload.as_ref()).await {
                                Ok(accepted) => {
                                    session = Some(accepted);
                                    self.send(json!({ "type": "connection_ack" })).await?;
                                }
                                Err(close) => return Err(close),
                            }
                        }
                        ClientMessage::Ping { .. } => {
                            self.send(json!({ "type": "pong" })).await?;
                        }
                        ClientMessage::Pong { .. } => {}
                        ClientMessage::Subscribe { id, payload } => {
                            if !payload.names_a_document() {
                                return Err(Ending::Close(CloseCode::BadMessage, "Invalid message received: subscribe needs a query or a persisted document's hash".into()));
                            }
                            let Some(session) = &session else {
                                return Err(Ending::Close(CloseCode::Unauthorized, "Unauthorized: send connection_init and wait for connection_ack".into()));
                            };
                            if started.contains_key(&id) {
                                return Err(Ending::Close(CloseCode::SubscriberExists, format!("Subscriber for {id} already exists")));
                            }
                            if started.len() >= live.max_subscriptions_per_connection.get() {
                                return Err(Ending::Close(CloseCode::PolicyViolation, format!(
                                    "more than {} subscriptions on one socket",
                                    live.max_subscriptions_per_connection.get()
                                )));
                            }
                            // A document refused for what it is costs no slot and no read.
                            let request = match self.prepare(payload) {
                                Ok(request) => request,
                                Err(errors) => {
                                    self.send(json!({ "type": "error", "id": id, "payload": errors })).await?;
                                    continue;
                                }
                            };
                            let Some(slot) = self.limits.slot(&live, true) else {
                                return Err(Ending::Close(CloseCode::TryAgainLater, "this instance runs as many subscriptions as it may; try again".into()));
                            };
                            // The subscription's place on the feed, taken now (anchoring the
                            // feed if nobody on this instance listened): every change committed
                            // from here on reaches it.
                            let hold = match self.app.live.hold(&self.app.db).await {
                                Ok(hold) => hold,
                                Err(error) => {
                                    let errors = graphql_errors(ApiError::from(AppError::from(error)));
                                    self.send(json!({ "type": "error", "id": id, "payload": errors })).await?;
                                    continue;
                                }
                            };
                            let mut operation = self.start(session, request, &signals, hold);
                            // An error (a visit it may not see, say) is usually known at once;
                            // sending it now keeps the answers in request order.
                            let first = operation.next().now_or_never();
                            operations.insert(id.clone(), operation);
                            started.insert(id.clone(), (false, slot));
                            if let Some(item) = first {
                                self.deliver(id, item.flatten(), &mut operations, &mut started, &signals).await?;
                                self.flush().await?;
                            }
                        }
                        ClientMessage::Complete { id } => {
                            operations.remove(&id);
                            started.remove(&id);
                        }
                    }
                }
                Some((id, item)) = operations.next(), if !operations.is_empty() => {
                    self.deliver(id, item, &mut operations, &mut started, &signals).await?;
                    // Whatever else is ready (the feed hands events on in stretches) goes out in
                    // the same write: one syscall for a burst instead of one per message.
                    for _ in 1..COALESCED_AT_MOST {
                        let Some(Some((id, item))) = operations.next().now_or_never() else {
                            break;
                        };
                        self.deliver(id, item, &mut operations, &mut started, &signals).await?;
                    }
                    self.flush().await?;
                }
                () = &mut init_deadline, if session.is_none() => {
                    return Err(Ending::Close(CloseCode::InitTimeout, "Connection initialisation timeout".into()));
                }
                () = until(expiry), if expiry.is_some() => {
                    return Err(Ending::Close(CloseCode::Forbidden, "Forbidden: the access token expired; reconnect with a fresh one".into()));
                }
                revocation = revocations.recv(), if session.is_some() => {
                    if let Some(session) = &session
                        && session.ended_by(&self.app, revocation).await
                    {
                        return Err(Ending::Close(CloseCode::Forbidden, "Forbidden: the session has ended".into()));
                    }
                }
                _ = pings.tick() => {
                    if last_heard.elapsed() > live.ping_interval * 3 {
                        return Err(Ending::Close(CloseCode::Normal, "no answer to pings".into()));
                    }
                    self.send(json!({ "type": "ping" })).await?;
                }
                () = signals.fell_behind() => {
                    return Err(Ending::Close(CloseCode::TryAgainLater, FELL_BEHIND.into()));
                }
                _ = shutdown.changed() => {
                    return Err(Ending::Close(CloseCode::GoingAway, "the server is shutting down; reconnect".into()));
                }
            }
        }
    }

    /// Sends what an operation produced: its first response as `error` when it was refused before
    /// it ran, else `next`; `complete` when it ended.
    async fn deliver(
        &mut self,
        id: String,
        item: Option<Response>,
        operations: &mut StreamMap<String, Operation>,
        started: &mut HashMap<String, (bool, Slot)>,
        signals: &SocketSignals,
    ) -> Result<(), Ending> {
        let Some(response) = item else {
            // A subscription cut off for falling behind did not end: close the socket instead of
            // completing it, so the client resubscribes (after re-reading by query).
            if signals.is_behind() {
                return Err(Ending::Close(CloseCode::TryAgainLater, FELL_BEHIND.into()));
            }
            operations.remove(&id);
            started.remove(&id);
            return self.send(json!({ "type": "complete", "id": id })).await;
        };
        let first = started
            .get_mut(&id)
            .is_some_and(|(sent, _)| !std::mem::replace(sent, true));
        let response = with_error_codes(response);
        if first && response.data == async_graphql::Value::Null && !response.errors.is_empty() {
            // Refused before it ran (invalid document, unknown id, no access): the protocol's
            // `error`, which ends the operation.
            operations.remove(&id);
            started.remove(&id);
            return self
                .send(json!({ "type": "error", "id": id, "payload": response.errors }))
                .await;
        }
        // Written straight to text: no JSON tree of the response on the way.
        let text = match serde_json::to_string(&response) {
            Ok(payload) => format!(
                r#"{{"type":"next","id":{},"payload":{payload}}}"#,
                Value::String(id)
            ),
            // A bug, not the client's doing: the client reconnects and resumes from its cursor.
            Err(error) => {
                tracing::error!(%error, "a response that does not serialise");
                return Err(Ending::Close(
                    CloseCode::TryAgainLater,
                    "internal error; reconnect".into(),
                ));
            }
        };
        self.queue(text).await
    }

    /// The request a `subscribe` asks for, or why it cannot run (as the `error` message's
    /// payload): its document (persisted or trusted), its strings and its required variables are
    /// checked as over HTTP.
    fn prepare(&self, payload: SubscribePayload) -> Result<async_graphql::Request, Value> {
        let mut request = async_graphql::Request::new(payload.query.unwrap_or_default());
        if let Some(variables) = payload.variables {
            request = request.variables(async_graphql::Variables::from_json(variables));
        }
        if let Some(name) = payload.operation_name {
            request = request.operation_name(name);
        }
        if let Some(extensions) = payload.extensions {
            request.extensions = extensions;
        }
        persisted::carry_document_id(&mut request, payload.document_id);
        if let Err(refused) = self.persisted.resolve(&mut request) {
            if self.persisted.is_trusted() {
                self.app.metrics.rejected(refused.code.as_str());
            }
            return Err(json!([refused.into_server_error()]));
        }
        if let Err(refused) = input::check(&mut request) {
            return Err(graphql_errors(ApiError::from(refused)));
        }
        if let Err(missing) = variables::check_required(&mut request) {
            return Err(json!(missing));
        }
        Ok(request)
    }

    /// Starts one operation on its place in the feed.
    fn start(
        &self,
        session: &Session,
        request: async_graphql::Request,
        signals: &Arc<SocketSignals>,
        place: feed::Receiver,
    ) -> Operation {
        let request = request_data::attach(
            request,
            &self.app,
            Some(session.bearer.clone()),
            self.client,
        )
        .data(signals.clone())
        .data(feed::Held::new(place));
        let stream = self
            .schema
            .execute_stream(request)
            .map(Some)
            .chain(futures::stream::once(async { None }));
        Box::pin(stream)
    }
}

/// Sleeps until `at` (forever when there is no such time).
async fn until(at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => {
            let left = (at - Utc::now()).to_std().unwrap_or_default();
            tokio::time::sleep(left).await;
        }
        None => std::future::pending().await,
    }
}

/// An `error` message's payload for a subscription refused before it ran.
fn graphql_errors(error: ApiError) -> Value {
    let error: async_graphql::Error = error.into();
    let response = with_error_codes(Response::from_errors(vec![
        error.into_server_error(Default::default()),
    ]));
    json!(response.errors)
}
