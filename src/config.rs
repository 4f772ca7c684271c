//! Settings: built-in defaults, then `.env` (development only), then the process environment.
use std::{net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Shortest accepted `JWT_SECRET`, in bytes: HS256 is only as strong as its key.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} has an invalid value: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error(
        "JWT_SECRET must be set to at least {MIN_JWT_SECRET_BYTES} random bytes in production \
         (e.g. `openssl rand -base64 48`)"
    )]
    MissingJwtSecret,
    #[error(
        "DATABASE_URL must be set in production: the self-provisioned local PostgreSQL is a \
         development convenience"
    )]
    MissingDatabaseUrl,
}

/// Everything the service reads from its environment. Secrets are wrapped so `Debug` never prints them.
#[derive(Debug)]
pub struct Config {
    pub environment: Environment,
    pub bind_addr: SocketAddr,
    /// When absent the service provisions a PostgreSQL cluster of its own under `local_postgres_dir`.
    pub database_url: Option<SecretString>,
    /// A direct connection (not through a transaction-pooling proxy) for what needs a session:
    /// the relay's leader lock. Defaults to `database_url`.
    pub database_direct_url: Option<SecretString>,
    pub local_postgres_dir: PathBuf,
    pub local_postgres_port: u16,
    pub database_pool_size: u32,
    /// How long a request waits for a pooled connection (or a new one) before a retryable error.
    pub database_acquire_timeout: Duration,
    pub lock_timeout: Duration,
    pub statement_timeout: Duration,
    pub idle_in_transaction_timeout: Duration,
    pub jwt_secret: SecretBox<[u8]>,
    /// True when no `JWT_SECRET` was given (development): tokens die with the process.
    pub jwt_secret_is_ephemeral: bool,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub starting_minutes: i32,
    pub overhead_percent: i32,
    pub cors_origins: Vec<String>,
    /// Also admit `http(s)://localhost`, `127.0.0.1` and `[::1]` on any port: the development
    /// default when `CORS_ORIGINS` is unset (dev servers pick their ports); never in production.
    pub cors_local_origins: bool,
    /// How long browsers may cache a preflight's answer.
    pub cors_max_age: Duration,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    pub graphql_depth_limit: usize,
    pub graphql_complexity_limit: usize,
    /// Aliased fields one document may hold (each is one more resolver run).
    pub graphql_max_aliases: usize,
    /// Operations one batched request may hold; a longer batch is refused whole.
    pub graphql_max_batch_operations: usize,
    pub introspection_enabled: bool,
    pub graphiql_enabled: bool,
    /// How many Argon2 computations may run at once; each holds ~19 MiB and a core.
    pub password_hashing_concurrency: usize,
    /// Login attempts allowed per client address per minute.
    pub login_attempts_per_address_per_minute: u32,
    /// Login attempts allowed per (account, client address) pair per minute.
    pub login_attempts_per_account_per_minute: u32,
    /// Peers whose forwarding header is believed (load balancers, proxies), and which header.
    pub trusted_proxies: TrustedProxies,
    /// Where `GET /metrics` is served.
    pub metrics: MetricsExposure,
    /// After SIGTERM, how long in-flight requests may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// NATS servers (one cluster) the relay publishes the event log to; none = no relay.
    pub nats_servers: Vec<String>,
    /// Replicas of the JetStream stream (3 in a NATS cluster).
    pub nats_stream_replicas: usize,
    /// Events the relay reads and publishes at a time.
    pub relay_batch_size: u64,
    /// `/readyz` turns 503 when a consumer has moved on no event for this long while events wait.
    pub consumer_stall_after: Duration,
    /// The event consumers this instance runs (`CONSUMERS`: their names, or `none`; default every
    /// one). Instances that serve requests can leave them to worker instances of their own, so a
    /// consumer's catching up never takes CPU from requests on the same machine.
    pub consumers: Vec<&'static str>,
    /// Delete events older than this (only once published, when there is a relay); `None` keeps
    /// the whole log.
    pub outbox_retention: Option<Duration>,
    /// Days after its date a visit can still be completed (UTC); after them it is expired.
    pub completion_grace_days: u32,
    /// How often an instance offers to sweep expired visits (one sweeps at a time).
    pub expiry_sweep_interval: Duration,
    /// Limits and timings of GraphQL subscriptions over WebSocket.
    pub live: LiveSettings,
}

/// The proxies whose word about the client is taken (`TRUSTED_PROXIES`), and the one header they
/// write it in (`FORWARDED_HEADER`).
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    pub nets: Vec<ipnet::IpNet>,
    pub header: ForwardedHeader,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ForwardedHeader {
    /// What nginx, AWS and most ingresses append to.
    #[default]
    XForwardedFor,
    /// RFC 7239's `Forwarded: for=...`.
    Forwarded,
}

/// `METRICS`: `on` (the default: `/metrics` beside `/graphql`), `off`, or an address of its own
/// (say `127.0.0.1:9100`, so only the scraper's network reaches it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsExposure {
    Off,
    SamePort,
    Own(SocketAddr),
}

/// What bounds the WebSocket side: caps close a socket with a reason rather than let one client
/// or one instance grow without limit.
#[derive(Debug, Clone)]
pub struct LiveSettings {
    /// Sockets one instance holds; the next is closed with 1013 (try another instance).
    pub max_connections: usize,
    /// Subscriptions one socket may run at once; one more closes it with 1008.
    pub max_subscriptions_per_connection: usize,
    /// Subscriptions one instance runs at once; the socket asking for one more is closed with 1013.
    pub max_subscriptions: usize,
    /// A socket that has not sent `connection_init` by then is closed with 4408.
    pub connection_init_timeout: Duration,
    /// A protocol `ping` goes out this often, so proxies keep idle sockets; a client silent for
    /// three of these is gone and its socket is closed.
    pub ping_interval: Duration,
    /// Events a subscriber may fall behind by before it is cut off (1013). The buffer is one per
    /// instance, shared by every subscriber.
    pub feed_buffer: usize,
}

impl Default for LiveSettings {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            max_subscriptions_per_connection: 100,
            max_subscriptions: 50_000,
            connection_init_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(15),
            feed_buffer: 4_096,
        }
    }
}

impl Config {
    /// Reads `.env` (development only) and the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let development = std::env::var("APP_ENV").map_or(true, |env| env.trim() != "production");
        if development {
            // A missing .env is the normal case; a malformed one is worth a warning, not a crash.
            if let Err(error) = dotenvy::dotenv()
                && !error.not_found()
            {
                tracing::warn!(%error, "ignoring unreadable .env");
            }
        }
        Self::from_source(&|name| std::env::var(name).ok())
    }

    /// Builds the configuration from any source of variables (the environment, or a map in tests).
    pub fn from_source(source: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read_string = |name| read::<String>(source, name);
        let environment = match read_string("APP_ENV")?.as_deref() {
            None | Some("development") => Environment::Development,
            Some("production") => Environment::Production,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "APP_ENV",
                    reason: format!("`{other}` is neither `development` nor `production`"),
                });
            }
        };
        let mut config = Self::defaults(environment);

        match read_string("DATABASE_URL")? {
            Some(url) => config.database_url = Some(SecretString::from(url)),
            None if environment == Environment::Production => {
                return Err(ConfigError::MissingDatabaseUrl);
            }
            None => {}
        }
        if let Some(url) = read_string("DATABASE_DIRECT_URL")? {
            config.database_direct_url = Some(SecretString::from(url));
        }
        if let Some(servers) = read_string("NATS_URL")? {
            config.nats_servers = servers
                .split(',')
                .map(str::trim)
                .filter(|server| !server.is_empty())
                .map(String::from)
                .collect();
        }
        set(
            source,
            &mut config.nats_stream_replicas,
            "NATS_STREAM_REPLICAS",
        )?;
        set(source, &mut config.relay_batch_size, "RELAY_BATCH_SIZE")?;
        if let Some(list) = read_string("CONSUMERS")? {
            config.consumers = parse_consumers(&list).map_err(|reason| ConfigError::Invalid {
                name: "CONSUMERS",
                reason,
            })?;
        }
        if let Some(seconds) = read::<u64>(source, "CONSUMER_STALL_SECONDS")? {
            config.consumer_stall_after = Duration::from_secs(seconds);
        }
        set(
            source,
            &mut config.completion_grace_days,
            "COMPLETION_GRACE_DAYS",
        )?;
        if let Some(seconds) = read::<u64>(source, "EXPIRY_SWEEP_SECONDS")? {
            config.expiry_sweep_interval = Duration::from_secs(seconds);
        }
        set(
            source,
            &mut config.live.max_connections,
            "WS_MAX_CONNECTIONS",
        )?;
        set(
            source,
            &mut config.live.max_subscriptions_per_connection,
            "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
        )?;
        set(
            source,
            &mut config.live.max_subscriptions,
            "WS_MAX_SUBSCRIPTIONS",
        )?;
        if let Some(seconds) = read::<u64>(source, "WS_CONNECTION_INIT_TIMEOUT_SECONDS")? {
            config.live.connection_init_timeout = Duration::from_secs(seconds);
        }
        if let Some(seconds) = read::<u64>(source, "WS_PING_INTERVAL_SECONDS")? {
            config.live.ping_interval = Duration::from_secs(seconds);
        }
        set(source, &mut config.live.feed_buffer, "LIVE_FEED_BUFFER")?;
        if let Some(days) = read::<u64>(source, "OUTBOX_RETENTION_DAYS")? {
            config.outbox_retention = Some(Duration::from_secs(days * 24 * 3600));
        }
        set(source, &mut config.bind_addr, "BIND_ADDR")?;
        set(source, &mut config.local_postgres_dir, "LOCAL_POSTGRES_DIR")?;
        set(
            source,
            &mut config.local_postgres_port,
            "LOCAL_POSTGRES_PORT",
        )?;
        set(source, &mut config.database_pool_size, "DATABASE_POOL_SIZE")?;
        set_millis(source, &mut config.lock_timeout, "LOCK_TIMEOUT_MS")?;
        set_millis(
            source,
            &mut config.database_acquire_timeout,
            "DATABASE_ACQUIRE_TIMEOUT_MS",
        )?;
        set_millis(
            source,
            &mut config.statement_timeout,
            "STATEMENT_TIMEOUT_MS",
        )?;
        set_millis(
            source,
            &mut config.idle_in_transaction_timeout,
            "IDLE_IN_TRANSACTION_TIMEOUT_MS",
        )?;
        set(source, &mut config.jwt_issuer, "JWT_ISSUER")?;
        set(source, &mut config.jwt_audience, "JWT_AUDIENCE")?;
        set(source, &mut config.starting_minutes, "STARTING_MINUTES")?;
        set(source, &mut config.overhead_percent, "OVERHEAD_PERCENT")?;
        set(source, &mut config.max_body_bytes, "MAX_BODY_BYTES")?;
        set(
            source,
            &mut config.graphql_depth_limit,
            "GRAPHQL_DEPTH_LIMIT",
        )?;
        set(
            source,
            &mut config.graphql_complexity_limit,
            "GRAPHQL_COMPLEXITY_LIMIT",
        )?;
        set(
            source,
            &mut config.graphql_max_aliases,
            "GRAPHQL_MAX_ALIASES",
        )?;
        set(
            source,
            &mut config.graphql_max_batch_operations,
            "GRAPHQL_MAX_BATCH_OPERATIONS",
        )?;
        set(
            source,
            &mut config.introspection_enabled,
            "GRAPHQL_INTROSPECTION",
        )?;
        set(source, &mut config.graphiql_enabled, "GRAPHIQL")?;
        set(
            source,
            &mut config.password_hashing_concurrency,
            "PASSWORD_HASHING_CONCURRENCY",
        )?;
        set(
            source,
            &mut config.login_attempts_per_address_per_minute,
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
        )?;
        set(
            source,
            &mut config.login_attempts_per_account_per_minute,
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
        )?;
        if let Some(seconds) = read::<u64>(source, "ACCESS_TOKEN_TTL_SECONDS")? {
            config.access_token_ttl = Duration::from_secs(seconds);
        }
        if let Some(seconds) = read::<u64>(source, "CORS_MAX_AGE_SECONDS")? {
            config.cors_max_age = Duration::from_secs(seconds);
        }
        if let Some(seconds) = read::<u64>(source, "SHUTDOWN_GRACE_SECONDS")? {
            config.shutdown_grace = Duration::from_secs(seconds);
        }
        if let Some(metrics) = read_string("METRICS")? {
            config.metrics = match metrics.trim() {
                "off" => MetricsExposure::Off,
                "on" | "" => MetricsExposure::SamePort,
                address => {
                    MetricsExposure::Own(address.parse().map_err(|_| ConfigError::Invalid {
                        name: "METRICS",
                        reason: format!("`{address}` is none of `off`, `on` or an address:port"),
                    })?)
                }
            };
        }
        if let Some(header) = read_string("FORWARDED_HEADER")? {
            config.trusted_proxies.header = match header.trim().to_ascii_lowercase().as_str() {
                "x-forwarded-for" => ForwardedHeader::XForwardedFor,
                "forwarded" => ForwardedHeader::Forwarded,
                other => {
                    return Err(ConfigError::Invalid {
                        name: "FORWARDED_HEADER",
                        reason: format!("`{other}` is neither `x-forwarded-for` nor `forwarded`"),
                    });
                }
            };
        }
        if let Some(list) = read_string("TRUSTED_PROXIES")? {
            config.trusted_proxies.nets =
                parse_trusted_proxies(&list).map_err(|reason| ConfigError::Invalid {
                    name: "TRUSTED_PROXIES",
                    reason,
                })?;
        }
        if let Some(origins) = read_string("CORS_ORIGINS")? {
            config.cors_local_origins = false;
            config.cors_origins = origins
                .split(',')
                .map(str::trim)
                .filter(|origin| !origin.is_empty())
                .map(String::from)
                .collect();
        }

        match read_string("JWT_SECRET")? {
            Some(secret) => {
                config.jwt_secret = SecretBox::new(secret.into_bytes().into_boxed_slice())
            }
            None if environment == Environment::Production => {
                return Err(ConfigError::MissingJwtSecret);
            }
            None => config.jwt_secret_is_ephemeral = true,
        }
        config.validate()?;
        Ok(config)
    }

    /// The defaults of an environment, with a fresh random JWT secret.
    pub fn defaults(environment: Environment) -> Self {
        let development = environment == Environment::Development;
        Self {
            environment,
            bind_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            database_url: None,
            database_direct_url: None,
            local_postgres_dir: PathBuf::from(".data/postgres"),
            local_postgres_port: 54329,
            database_pool_size: 8,
            database_acquire_timeout: Duration::from_millis(1500),
            lock_timeout: Duration::from_secs(3),
            statement_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(30),
            jwt_secret: random_secret(),
            jwt_secret_is_ephemeral: false,
            jwt_issuer: "home-visits".into(),
            jwt_audience: "home-visits".into(),
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            starting_minutes: 120,
            overhead_percent: 15,
            cors_origins: Vec::new(),
            cors_local_origins: development,
            cors_max_age: Duration::from_secs(600),
            max_body_bytes: 64 * 1024,
            request_timeout: Duration::from_secs(30),
            graphql_depth_limit: 10,
            graphql_complexity_limit: 5_000,
            graphql_max_aliases: 30,
            graphql_max_batch_operations: 10,
            introspection_enabled: development,
            graphiql_enabled: development,
            password_hashing_concurrency: std::thread::available_parallelism()
                .map_or(2, usize::from),
            login_attempts_per_address_per_minute: 30,
            login_attempts_per_account_per_minute: 10,
            trusted_proxies: TrustedProxies::default(),
            metrics: MetricsExposure::SamePort,
            shutdown_grace: Duration::from_secs(10),
            nats_servers: Vec::new(),
            nats_stream_replicas: 1,
            relay_batch_size: 500,
            outbox_retention: None,
            consumer_stall_after: Duration::from_secs(60),
            consumers: CONSUMERS.to_vec(),
            completion_grace_days: 2,
            expiry_sweep_interval: Duration::from_secs(60),
            live: LiveSettings::default(),
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| {
            Err(ConfigError::Invalid {
                name,
                reason: reason.to_string(),
            })
        };
        if self.jwt_secret.expose_secret().len() < MIN_JWT_SECRET_BYTES {
            return invalid("JWT_SECRET", "must be at least 32 bytes long");
        }
        if self.starting_minutes < 0 {
            return invalid("STARTING_MINUTES", "must not be negative");
        }
        if !(0..=100).contains(&self.overhead_percent) {
            return invalid("OVERHEAD_PERCENT", "must be between 0 and 100");
        }
        let at_least_one = [
            ("DATABASE_POOL_SIZE", self.database_pool_size),
            (
                "PASSWORD_HASHING_CONCURRENCY",
                u32::try_from(self.password_hashing_concurrency).unwrap_or(u32::MAX),
            ),
            (
                "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
                self.login_attempts_per_address_per_minute,
            ),
            (
                "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
                self.login_attempts_per_account_per_minute,
            ),
            (
                "NATS_STREAM_REPLICAS",
                u32::try_from(self.nats_stream_replicas).unwrap_or(u32::MAX),
            ),
            (
                "RELAY_BATCH_SIZE",
                u32::try_from(self.relay_batch_size).unwrap_or(u32::MAX),
            ),
            (
                "WS_MAX_CONNECTIONS",
                u32::try_from(self.live.max_connections).unwrap_or(u32::MAX),
            ),
            (
                "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
                u32::try_from(self.live.max_subscriptions_per_connection).unwrap_or(u32::MAX),
            ),
            (
                "WS_MAX_SUBSCRIPTIONS",
                u32::try_from(self.live.max_subscriptions).unwrap_or(u32::MAX),
            ),
            (
                "WS_CONNECTION_INIT_TIMEOUT_SECONDS",
                u32::try_from(self.live.connection_init_timeout.as_secs()).unwrap_or(u32::MAX),
            ),
            (
                "WS_PING_INTERVAL_SECONDS",
                u32::try_from(self.live.ping_interval.as_secs()).unwrap_or(u32::MAX),
            ),
            (
                "LIVE_FEED_BUFFER",
                u32::try_from(self.live.feed_buffer).unwrap_or(u32::MAX),
            ),
            (
                "GRAPHQL_MAX_BATCH_OPERATIONS",
                u32::try_from(self.graphql_max_batch_operations).unwrap_or(u32::MAX),
            ),
            (
                "EXPIRY_SWEEP_SECONDS",
                u32::try_from(self.expiry_sweep_interval.as_secs()).unwrap_or(u32::MAX),
            ),
        ];
        if let Some((name, _)) = at_least_one.iter().find(|(_, value)| *value == 0) {
            return invalid(name, "must be at least 1");
        }
        Ok(())
    }
}

fn random_secret() -> SecretBox<[u8]> {
    let mut bytes = vec![0_u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    SecretBox::new(bytes.into_boxed_slice())
}

type Source<'a> = &'a dyn Fn(&str) -> Option<String>;

fn read<T: FromStr>(source: Source<'_>, name: &'static str) -> Result<Option<T>, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match source(name) {
        Some(value) if value.trim().is_empty() => Ok(None),
        Some(value) => {
            value
                .trim()
                .parse()
                .map(Some)
                .map_err(|error: T::Err| ConfigError::Invalid {
                    name,
                    reason: error.to_string(),
                })
        }
        None => Ok(None),
    }
}

fn set<T: FromStr>(source: Source<'_>, field: &mut T, name: &'static str) -> Result<(), ConfigError>
where
    T::Err: std::fmt::Display,
{
    if let Some(value) = read(source, name)? {
        *field = value;
    }
    Ok(())
}

fn set_millis(
    source: Source<'_>,
    field: &mut Duration,
    name: &'static str,
) -> Result<(), ConfigError> {
    if let Some(millis) = read::<u64>(source, name)? {
        *field = Duration::from_millis(millis);
    }
    Ok(())
}

/// Every consumer of the event log there is, by the name it reports and checkpoints under.
pub const CONSUMERS: &[&str] = &["notifications"];

/// `CONSUMERS`: names from [`CONSUMERS`], comma-separated, or `none`. A list of no names (`,`) is
/// refused rather than read as `none`: a slip should not quietly stop notifications.
fn parse_consumers(list: &str) -> Result<Vec<&'static str>, String> {
    let names: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .collect();
    match names.as_slice() {
        [] => return Err("is empty: name the consumers to run, or `none`".to_string()),
        ["none"] => return Ok(Vec::new()),
        _ if names.contains(&"none") => {
            return Err("`none` cannot be combined with consumer names".to_string());
        }
        _ => {}
    }
    let mut chosen = Vec::new();
    for name in names {
        let known = CONSUMERS
            .iter()
            .find(|known| **known == name)
            .ok_or_else(|| {
                format!(
                    "`{name}` is not a consumer (there are: {})",
                    CONSUMERS.join(", ")
                )
            })?;
        if !chosen.contains(known) {
            chosen.push(*known);
        }
    }
    Ok(chosen)
}

/// `TRUSTED_PROXIES`: comma-separated CIDRs or single addresses.
pub fn parse_trusted_proxies(list: &str) -> Result<Vec<ipnet::IpNet>, String> {
    list.split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .map(|entry| {
            entry
                .parse::<ipnet::IpNet>()
                .or_else(|_| entry.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("`{entry}` is neither a CIDR nor an IP address"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_source(&|name| vars.get(name).cloned())
    }

    const PRODUCTION_SECRET: &str = "0123456789abcdef0123456789abcdef!";
    const PRODUCTION_DATABASE: &str = "postgres://app@db/app";

    #[test]
    fn production_refuses_to_start_without_a_jwt_secret() {
        assert!(matches!(
            from(&[
                ("APP_ENV", "production"),
                ("DATABASE_URL", PRODUCTION_DATABASE)
            ]),
            Err(ConfigError::MissingJwtSecret)
        ));
    }

    #[test]
    fn production_refuses_to_start_without_a_database_url() {
        let error = from(&[("APP_ENV", "production"), ("JWT_SECRET", PRODUCTION_SECRET)]).err();
        assert!(matches!(error, Some(ConfigError::MissingDatabaseUrl)));
        assert!(
            error
                .map(|error| error.to_string())
                .is_some_and(|message| message.starts_with("DATABASE_URL must be set"))
        );
    }

    #[test]
    fn a_zero_limit_names_its_own_variable() {
        for name in [
            "DATABASE_POOL_SIZE",
            "PASSWORD_HASHING_CONCURRENCY",
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
            "NATS_STREAM_REPLICAS",
            "RELAY_BATCH_SIZE",
        ] {
            let error = from(&[(name, "0")]).err();
            assert!(
                matches!(error, Some(ConfigError::Invalid { name: found, .. }) if found == name),
                "{name}: {error:?}"
            );
        }
    }

    #[test]
    fn a_short_jwt_secret_is_refused_in_any_environment() {
        let error = from(&[("JWT_SECRET", "too-short")]).err();
        assert!(matches!(
            error,
            Some(ConfigError::Invalid {
                name: "JWT_SECRET",
                ..
            })
        ));
    }

    #[test]
    fn production_turns_introspection_and_graphiql_off() {
        let config = from(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", PRODUCTION_SECRET),
            ("DATABASE_URL", PRODUCTION_DATABASE),
        ])
        .expect("valid config");
        assert!(!config.introspection_enabled && !config.graphiql_enabled);
        assert!(config.cors_origins.is_empty() && !config.cors_local_origins);
    }

    #[test]
    fn development_defaults_match_the_documented_ones() {
        let config = from(&[]).expect("valid config");
        assert_eq!(config.starting_minutes, 120);
        assert_eq!(config.overhead_percent, 15);
        assert_eq!(config.bind_addr.to_string(), "127.0.0.1:8080");
        assert!(config.database_url.is_none());
    }

    #[test]
    fn nats_url_takes_a_list_of_servers_and_is_off_by_default() {
        assert!(from(&[]).expect("valid config").nats_servers.is_empty());
        let config = from(&[("NATS_URL", "nats://a:4222, nats://b:4222,")]).expect("valid config");
        assert_eq!(config.nats_servers, vec!["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.outbox_retention, None);
        let kept = from(&[("OUTBOX_RETENTION_DAYS", "7")]).expect("valid config");
        assert_eq!(
            kept.outbox_retention,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn consumers_run_everywhere_unless_named_or_none() {
        assert_eq!(from(&[]).expect("valid config").consumers, CONSUMERS);
        // Blank is unset, as for every variable.
        let blank = from(&[("CONSUMERS", " ")]).expect("valid config");
        assert_eq!(blank.consumers, CONSUMERS);
        let none = from(&[("CONSUMERS", " none ")]).expect("valid config");
        assert!(none.consumers.is_empty());
        let named = from(&[("CONSUMERS", "notifications, notifications,")]).expect("valid config");
        assert_eq!(named.consumers, ["notifications"]);
        // The list is checked against the consumers' own names, which state.rs starts them by.
        assert!(CONSUMERS.contains(
            &<crate::notifications::NotificationsHandler as crate::events::consumer::Handler>::NAME
        ));
        for refused in [",", " , ", "notification", "none,notifications"] {
            assert!(
                matches!(
                    from(&[("CONSUMERS", refused)]),
                    Err(ConfigError::Invalid {
                        name: "CONSUMERS",
                        ..
                    })
                ),
                "CONSUMERS={refused:?} should be refused"
            );
        }
    }

    #[test]
    fn secrets_never_appear_in_debug_output() {
        let config = from(&[
            ("JWT_SECRET", "a-very-secret-value-that-is-long-enough"),
            ("DATABASE_URL", "postgres://user:hunter2@db/app"),
        ])
        .expect("valid config");
        let printed = format!("{config:?}");
        assert!(!printed.contains("a-very-secret-value") && !printed.contains("hunter2"));
    }

    #[test]
    fn unparsable_numbers_name_their_variable() {
        let error = from(&[("STARTING_MINUTES", "lots")]).err();
        assert!(matches!(
            error,
            Some(ConfigError::Invalid {
                name: "STARTING_MINUTES",
                ..
            })
        ));
    }
}
