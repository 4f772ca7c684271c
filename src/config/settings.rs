//! The settings, by concern. Each field names the variable it is read from (`env`); defaults and
//! ranges are declared beside it, and a value of the wrong type, out of its range, or zero where
//! zero cannot work is refused by clap with the variable's name.
use std::{
    net::SocketAddr,
    num::{NonZeroU32, NonZeroU64, NonZeroUsize},
    path::PathBuf,
    time::Duration,
};

use clap::{ArgAction, Args, ValueEnum};
use secrecy::SecretString;

use super::parse;

/// Where the service listens and what every HTTP request may do.
#[derive(Debug, Clone, Args)]
pub struct ServerSettings {
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,
    /// Largest request body, and largest WebSocket message, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value = "65536")]
    pub max_body_bytes: NonZeroUsize,
    /// How long one HTTP request may take before a 408.
    #[arg(skip = Duration::from_secs(30))]
    pub request_timeout: Duration,
    /// After SIGTERM, how long in-flight requests may take before the process exits anyway.
    #[arg(long = "shutdown-grace-seconds", env = "SHUTDOWN_GRACE_SECONDS", default_value = "10", value_parser = parse::seconds)]
    pub shutdown_grace: Duration,
    /// Where `GET /metrics` is served: `on` (beside `/graphql`), `off`, or an address of its own.
    #[arg(long, env = "METRICS", default_value = "on", value_parser = parse::metrics)]
    pub metrics: MetricsExposure,
    #[command(flatten)]
    pub trusted_proxies: TrustedProxies,
    #[command(flatten)]
    pub cors: CorsSettings,
}

/// `METRICS`: `on` (the default: `/metrics` beside `/graphql`), `off`, or an address of its own
/// (say `127.0.0.1:9100`, so only the scraper's network reaches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsExposure {
    Off,
    SamePort,
    Own(SocketAddr),
}

/// The proxies whose word about the client is taken (`TRUSTED_PROXIES`), and the one header they
/// write it in (`FORWARDED_HEADER`).
#[derive(Debug, Clone, Default, Args)]
pub struct TrustedProxies {
    #[arg(long = "trusted-proxies", env = "TRUSTED_PROXIES", default_value = "", value_parser = parse::trusted_proxies)]
    pub nets: ::std::vec::Vec<ipnet::IpNet>,
    #[arg(
        long = "forwarded-header",
        env = "FORWARDED_HEADER",
        value_enum,
        ignore_case = true,
        default_value = "x-forwarded-for"
    )]
    pub header: ForwardedHeader,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ForwardedHeader {
    /// What nginx, AWS and most ingresses append to.
    #[default]
    XForwardedFor,
    /// RFC 7239's `Forwarded: for=...`.
    Forwarded,
}

/// How the request pool's connections reach PostgreSQL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum PoolMode {
    /// Each connection is a session of its own: statements stay prepared, settings stay set.
    #[default]
    Direct,
    /// A transaction pooler: nothing outlives a transaction, so every statement runs inside one
    /// and each transaction sets its own timeouts.
    Transaction,
}

/// Which browser origins may call the API.
#[derive(Debug, Clone, Args)]
pub struct CorsSettings {
    #[arg(long = "cors-origins", env = "CORS_ORIGINS", default_value = "", value_parser = parse::list)]
    pub origins: ::std::vec::Vec<String>,
    /// Also admit `http(s)://localhost`, `127.0.0.1` and `[::1]` on any port: the development
    /// default when `CORS_ORIGINS` is unset (dev servers pick their ports); never in production.
    #[arg(skip)]
    pub local_origins: bool,
    /// How long browsers may cache a preflight's answer.
    #[arg(long = "cors-max-age-seconds", env = "CORS_MAX_AGE_SECONDS", default_value = "600", value_parser = parse::seconds)]
    pub max_age: Duration,
}

/// The database, its pool and the timeouts every session carries.
#[derive(Debug, Args)]
pub struct DatabaseSettings {
    /// When absent the service provisions a PostgreSQL cluster of its own under `local_postgres_dir`.
    #[arg(long = "database-url", env = "DATABASE_URL", value_parser = parse::secret)]
    pub url: Option<SecretString>,
    /// A direct connection (not through a transaction-pooling proxy) for what needs a session:
    /// migrations, the relay's leader lock, every `LISTEN`. Defaults to `url`; required when
    /// `pool_mode` is `transaction`.
    #[arg(long = "database-direct-url", env = "DATABASE_DIRECT_URL", value_parser = parse::secret)]
    pub direct_url: Option<SecretString>,
    /// What `url` reaches: PostgreSQL itself, or a pooler that hands each transaction any server
    /// connection (PgBouncer's `pool_mode = transaction`).
    #[arg(
        long = "database-pool-mode",
        env = "DATABASE_POOL_MODE",
        value_enum,
        ignore_case = true,
        default_value = "direct"
    )]
    pub pool_mode: PoolMode,
    /// A streaming replica for reads that tolerate a moment's lag; each still shows what its
    /// caller committed (see `db::replica`).
    #[arg(long = "database-read-url", env = "DATABASE_READ_URL", value_parser = parse::secret)]
    pub read_url: Option<SecretString>,
    /// A replica further behind than this is skipped: its reads go to the primary.
    #[arg(long = "database-read-max-lag-ms", env = "DATABASE_READ_MAX_LAG_MS", default_value = "1000", value_parser = parse::millis)]
    pub read_max_lag: Duration,
    #[arg(
        long = "database-pool-size",
        env = "DATABASE_POOL_SIZE",
        default_value = "8"
    )]
    pub pool_size: NonZeroU32,
    /// How long a request waits for a pooled connection (or a new one) before a retryable error.
    #[arg(long = "database-acquire-timeout-ms", env = "DATABASE_ACQUIRE_TIMEOUT_MS", default_value = "1500", value_parser = parse::millis)]
    pub acquire_timeout: Duration,
    #[arg(long = "lock-timeout-ms", env = "LOCK_TIMEOUT_MS", default_value = "3000", value_parser = parse::millis)]
    pub lock_timeout: Duration,
    #[arg(long = "statement-timeout-ms", env = "STATEMENT_TIMEOUT_MS", default_value = "10000", value_parser = parse::millis)]
    pub statement_timeout: Duration,
    #[arg(long = "idle-in-transaction-timeout-ms", env = "IDLE_IN_TRANSACTION_TIMEOUT_MS", default_value = "30000", value_parser = parse::millis)]
    pub idle_in_transaction_timeout: Duration,
    #[arg(
        long = "local-postgres-dir",
        env = "LOCAL_POSTGRES_DIR",
        default_value = ".data/postgres"
    )]
    pub local_postgres_dir: PathBuf,
    #[arg(
        long = "local-postgres-port",
        env = "LOCAL_POSTGRES_PORT",
        default_value = "54329"
    )]
    pub local_postgres_port: u16,
}

/// Tokens, passwords and how often one may try them.
#[derive(Debug, Args)]
pub struct AuthSettings {
    /// The HS256 key tokens are signed with; a random one for this process when unset in
    /// development (see `jwt_secret_is_ephemeral`).
    #[arg(long = "jwt-secret", env = "JWT_SECRET", value_parser = parse::secret)]
    pub jwt_secret: Option<SecretString>,
    /// True when no `JWT_SECRET` was given (development): tokens die with the process.
    #[arg(skip)]
    pub jwt_secret_is_ephemeral: bool,
    #[arg(long = "jwt-issuer", env = "JWT_ISSUER", default_value = "home-visits")]
    pub jwt_issuer: String,
    #[arg(
        long = "jwt-audience",
        env = "JWT_AUDIENCE",
        default_value = "home-visits"
    )]
    pub jwt_audience: String,
    #[arg(long = "access-token-ttl-seconds", env = "ACCESS_TOKEN_TTL_SECONDS", default_value = "900", value_parser = parse::positive_seconds)]
    pub access_token_ttl: Duration,
    #[arg(skip = Duration::from_secs(30 * 24 * 3600))]
    pub refresh_token_ttl: Duration,
    /// How many Argon2 computations may run at once; each holds ~19 MiB and a core.
    #[arg(long = "password-hashing-concurrency", env = "PASSWORD_HASHING_CONCURRENCY", default_value_t = cores())]
    pub password_hashing_concurrency: NonZeroUsize,
    /// Login attempts allowed per client address per minute.
    #[arg(
        long = "login-attempts-per-address-per-minute",
        env = "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
        default_value = "30"
    )]
    pub login_attempts_per_address_per_minute: NonZeroU32,
    /// Login attempts allowed per (account, client address) pair per minute.
    #[arg(
        long = "login-attempts-per-account-per-minute",
        env = "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
        default_value = "10"
    )]
    pub login_attempts_per_account_per_minute: NonZeroU32,
}

fn cores() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN.saturating_add(1))
}

/// The rules of the minute bank.
#[derive(Debug, Clone, Args)]
pub struct VisitSettings {
    #[arg(long = "starting-minutes", env = "STARTING_MINUTES", default_value = "120", value_parser = clap::value_parser!(i32).range(0..))]
    pub starting_minutes: i32,
    #[arg(long = "overhead-percent", env = "OVERHEAD_PERCENT", default_value = "15", value_parser = clap::value_parser!(i32).range(0..=100))]
    pub overhead_percent: i32,
    /// Days after its date a visit can still be completed (UTC); after them it is expired.
    #[arg(
        long = "completion-grace-days",
        env = "COMPLETION_GRACE_DAYS",
        default_value = "2"
    )]
    pub completion_grace_days: u32,
    /// How often an instance offers to sweep expired visits (one sweeps at a time).
    #[arg(long = "expiry-sweep-seconds", env = "EXPIRY_SWEEP_SECONDS", default_value = "60", value_parser = parse::positive_seconds)]
    pub expiry_sweep_interval: Duration,
}

/// What one GraphQL request may cost, and what development tools are served.
#[derive(Debug, Clone, Args)]
pub struct GraphqlSettings {
    #[arg(
        long = "graphql-depth-limit",
        env = "GRAPHQL_DEPTH_LIMIT",
        default_value = "10"
    )]
    pub depth_limit: usize,
    #[arg(
        long = "graphql-complexity-limit",
        env = "GRAPHQL_COMPLEXITY_LIMIT",
        default_value = "5000"
    )]
    pub complexity_limit: usize,
    /// Aliased fields one document may hold (each is one more resolver run).
    #[arg(
        long = "graphql-max-aliases",
        env = "GRAPHQL_MAX_ALIASES",
        default_value = "30"
    )]
    pub max_aliases: usize,
    /// Operations one batched request may hold; a longer batch is refused whole.
    #[arg(
        long = "graphql-max-batch-operations",
        env = "GRAPHQL_MAX_BATCH_OPERATIONS",
        default_value = "10"
    )]
    pub max_batch_operations: NonZeroUsize,
    /// On by default in development, off in production.
    #[arg(long = "graphql-introspection", env = "GRAPHQL_INTROSPECTION", action = ArgAction::Set, default_value = "false")]
    pub introspection: bool,
    /// On by default in development, off in production.
    #[arg(long = "graphiql", env = "GRAPHIQL", action = ArgAction::Set, default_value = "false")]
    pub graphiql: bool,
    /// Serve the schema as an Apollo Federation v2 subgraph (`on` or `off`).
    #[arg(long = "federation", env = "FEDERATION", action = ArgAction::Set, default_value = "off", value_parser = parse::switch)]
    pub federation: bool,
    /// A manifest of the only documents requests may run (see `api::trusted`); unset, any
    /// document runs and clients may register persisted queries.
    #[arg(long = "trusted-documents", env = "TRUSTED_DOCUMENTS")]
    pub trusted_documents: Option<PathBuf>,
}

/// The event log's way out: the relay to NATS, the consumers, and how long events are kept.
#[derive(Debug, Clone, Args)]
pub struct EventSettings {
    /// NATS servers (one cluster) the relay publishes the event log to; none = no relay.
    #[arg(long = "nats-url", env = "NATS_URL", default_value = "", value_parser = parse::list)]
    pub nats_servers: ::std::vec::Vec<String>,
    /// Replicas of the JetStream stream (3 in a NATS cluster).
    #[arg(
        long = "nats-stream-replicas",
        env = "NATS_STREAM_REPLICAS",
        default_value = "1"
    )]
    pub nats_stream_replicas: NonZeroUsize,
    /// Events the relay reads and publishes at a time.
    #[arg(
        long = "relay-batch-size",
        env = "RELAY_BATCH_SIZE",
        default_value = "500"
    )]
    pub relay_batch_size: NonZeroU64,
    /// `/readyz` turns 503 when a consumer has moved on no event for this long while events wait.
    #[arg(long = "consumer-stall-seconds", env = "CONSUMER_STALL_SECONDS", default_value = "60", value_parser = parse::seconds)]
    pub consumer_stall_after: Duration,
    /// The event consumers this instance runs (their names, or `none`; default every one).
    /// Instances that serve requests can leave them to worker instances of their own, so a
    /// consumer's catching up never takes CPU from requests on the same machine.
    #[arg(long = "consumers", env = "CONSUMERS", default_value_t = ConsumerNames::every(), value_parser = parse::consumers)]
    pub consumers: ConsumerNames,
    /// Delete events older than this (only once published, when there is a relay); unset keeps
    /// the whole log.
    #[arg(long = "outbox-retention-days", env = "OUTBOX_RETENTION_DAYS", value_parser = parse::days)]
    pub outbox_retention: Option<Duration>,
}

/// The consumers an instance runs, by name (see [`super::CONSUMERS`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerNames(pub Vec<&'static str>);

impl ConsumerNames {
    /// Every consumer there is: the default, so a single instance is the whole system.
    pub fn every() -> Self {
        Self(super::CONSUMERS.to_vec())
    }
}

impl std::ops::Deref for ConsumerNames {
    type Target = [&'static str];

    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::fmt::Display for ConsumerNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.join(","))
    }
}

impl EventSettings {
    /// Whether the event log is published to a broker.
    pub fn has_broker(&self) -> bool {
        !self.nats_servers.is_empty()
    }
}

/// What bounds the WebSocket side: caps close a socket with a reason rather than let one client
/// or one instance grow without limit.
#[derive(Debug, Clone, Args)]
pub struct LiveSettings {
    /// Sockets one instance holds; the next is closed with 1013 (try another instance).
    #[arg(
        long = "ws-max-connections",
        env = "WS_MAX_CONNECTIONS",
        default_value = "10000"
    )]
    pub max_connections: NonZeroUsize,
    /// Subscriptions one socket may run at once; one more closes it with 1008.
    #[arg(
        long = "ws-max-subscriptions-per-connection",
        env = "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        default_value = "100"
    )]
    pub max_subscriptions_per_connection: NonZeroUsize,
    /// Subscriptions one instance runs at once; the socket asking for one more is closed with 1013.
    #[arg(
        long = "ws-max-subscriptions",
        env = "WS_MAX_SUBSCRIPTIONS",
        default_value = "50000"
    )]
    pub max_subscriptions: NonZeroUsize,
    /// A socket that has not sent `connection_init` by then is closed with 4408.
    #[arg(long = "ws-connection-init-timeout-seconds", env = "WS_CONNECTION_INIT_TIMEOUT_SECONDS", default_value = "10", value_parser = parse::positive_seconds)]
    pub connection_init_timeout: Duration,
    /// A protocol `ping` goes out this often, so proxies keep idle sockets; a client silent for
    /// three of these is gone and its socket is closed.
    #[arg(long = "ws-ping-interval-seconds", env = "WS_PING_INTERVAL_SECONDS", default_value = "15", value_parser = parse::positive_seconds)]
    pub ping_interval: Duration,
    /// Events a subscriber may fall behind by before it is cut off (1013). The buffer is one per
    /// instance, shared by every subscriber.
    #[arg(
        long = "live-feed-buffer",
        env = "LIVE_FEED_BUFFER",
        default_value = "4096"
    )]
    pub feed_buffer: NonZeroUsize,
}
