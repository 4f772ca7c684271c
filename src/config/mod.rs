//! Settings: built-in defaults, then (in development) `.env` and the development defaults, then
//! the process environment. Each setting is declared once, in [`settings`], with the variable it
//! is read from, its default and its range; clap reads and checks them. clap rather than figment
//! or envy: it is already the CLI's parser, it reads a value with the type's own parser and
//! ranges, and its errors say what was wrong, which [`invalid_setting`] words by the variable.
//!
//! Read from elsewhere, and documented beside these: `RUST_LOG` and `LOG_FORMAT` (`telemetry`),
//! `POSTGRES_BIN_DIR` (`local_postgres`).
pub mod parse;
mod settings;

use std::ffi::OsString;

use clap::{CommandFactory, FromArgMatches, Parser, ValueEnum};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};

pub use settings::{
    AuthSettings, ConsumerNames, CorsSettings, DatabaseSettings, EventSettings, ForwardedHeader,
    GraphqlSettings, LiveSettings, MetricsExposure, PoolMode, ServerSettings, TrustedProxies,
    VisitSettings,
};

/// Shortest accepted `JWT_SECRET`, in bytes: HS256 is only as strong as its key.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Every consumer of the event log there is, by the name it reports and checkpoints under.
pub const CONSUMERS: &[&str] = &["notifications"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{name} has an invalid value: {reason}")]
    Invalid { name: String, reason: String },
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
#[derive(Debug, Parser)]
#[command(
    name = "home-visits settings",
    no_binary_name = true,
    disable_help_flag = true
)]
pub struct Config {
    #[arg(
        long = "app-env",
        env = "APP_ENV",
        value_enum,
        default_value = "development"
    )]
    pub environment: Environment,
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub auth: AuthSettings,
    #[command(flatten)]
    pub visits: VisitSettings,
    #[command(flatten)]
    pub graphql: GraphqlSettings,
    #[command(flatten)]
    pub events: EventSettings,
    #[command(flatten)]
    pub live: LiveSettings,
}

/// What development turns on unless the environment says otherwise.
const DEVELOPMENT_DEFAULTS: &[(&str, &str)] =
    &[("GRAPHQL_INTROSPECTION", "true"), ("GRAPHIQL", "true")];

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

    /// Builds the configuration from any source of variables (the environment, or a map in
    /// tests). A blank value is an unset one.
    pub fn from_source(source: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let read = |name: &str| {
            source(name)
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        };
        let production = read("APP_ENV").as_deref() == Some("production");
        // clap is handed the variables as arguments, so what it reads is the source's and only
        // the source's (the process environment stays out of tests).
        let mut arguments: Vec<OsString> = Vec::new();
        let command = Self::command().mut_args(|arg| {
            let variable = arg
                .get_env()
                .and_then(|name| name.to_str())
                .map(str::to_owned);
            let development_default = DEVELOPMENT_DEFAULTS
                .iter()
                .find(|(name, _)| Some(*name) == variable.as_deref())
                .filter(|_| !production)
                .map(|(_, value)| value.to_string());
            if let (Some(variable), Some(long)) = (&variable, arg.get_long())
                && let Some(value) = read(variable).or(development_default)
            {
                arguments.push(format!("--{long}={value}").into());
            }
            arg.env(None)
        });
        let matches = command
            .try_get_matches_from(arguments)
            .map_err(|error| invalid_setting(&error))?;
        let mut config =
            Self::from_arg_matches(&matches).map_err(|error| invalid_setting(&error))?;
        config.server.cors.local_origins = !production && read("CORS_ORIGINS").is_none();
        if production && config.database.url.is_none() {
            return Err(ConfigError::MissingDatabaseUrl);
        }
        if config.auth.jwt_secret.is_none() {
            if production {
                return Err(ConfigError::MissingJwtSecret);
            }
            config.auth.jwt_secret = Some(random_secret());
            config.auth.jwt_secret_is_ephemeral = true;
        }
        config.validate()?;
        Ok(config)
    }

    /// The development defaults, with a fresh random JWT secret: what a test starts from.
    pub fn development() -> Self {
        Self::from_source(&|_| None)
            .unwrap_or_else(|error| unreachable!("the defaults are a valid configuration: {error}"))
    }

    /// What clap cannot say of a single value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.graphql.federation && self.graphql.trusted_documents.is_some() {
            return Err(ConfigError::Invalid {
                name: "TRUSTED_DOCUMENTS".into(),
                reason: "cannot be set with FEDERATION=on: a router writes the documents a \
                         subgraph runs, and they are in no manifest"
                    .into(),
            });
        }
        if self.database.pool_mode == PoolMode::Transaction {
            if self.database.url.is_none() {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_POOL_MODE".into(),
                    reason: "`transaction` needs DATABASE_URL to name the pooler; the local \
                             PostgreSQL has none"
                        .into(),
                });
            }
            if self.database.direct_url.is_none() {
                return Err(ConfigError::Invalid {
                    name: "DATABASE_DIRECT_URL".into(),
                    reason: "must be set with DATABASE_POOL_MODE=transaction: migrations, the \
                             relay's leader lock and LISTEN need a session, which a transaction \
                             pooler does not keep"
                        .into(),
                });
            }
        }
        if self.jwt_secret().len() < MIN_JWT_SECRET_BYTES {
            return Err(ConfigError::Invalid {
                name: "JWT_SECRET".into(),
                reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes long"),
            });
        }
        Ok(())
    }

    /// The key tokens are signed with.
    pub fn jwt_secret(&self) -> &[u8] {
        self.auth
            .jwt_secret
            .as_ref()
            .map_or(&[], |secret| secret.expose_secret().as_bytes())
    }

    /// Every variable a setting is read from, as declared.
    pub fn variables() -> Vec<String> {
        Self::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env()?.to_str().map(str::to_owned))
            .collect()
    }
}

/// A clap error in the words of the variable it is about.
fn invalid_setting(error: &clap::Error) -> ConfigError {
    use clap::error::{ContextKind, ContextValue};
    let argument = match error.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(argument)) => argument.clone(),
        _ => String::new(),
    };
    let long = argument
        .trim_start_matches("--")
        .split([' ', '='])
        .next()
        .unwrap_or_default()
        .to_string();
    let name = Config::command()
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long.as_str()))
        .and_then(|arg| arg.get_env()?.to_str().map(str::to_owned))
        .unwrap_or_else(|| "a setting".to_string());
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(value)) => format!("`{value}`: "),
        _ => String::new(),
    };
    let reason = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| error.kind().to_string());
    ConfigError::Invalid {
        name,
        reason: format!("{value}{reason}"),
    }
}

fn random_secret() -> SecretString {
    let mut bytes = [0_u8; 48];
    rand::rng().fill_bytes(&mut bytes);
    SecretString::from(
        bytes
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, time::Duration};

    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_source(&|name| vars.get(name).cloned())
    }

    fn refused(vars: &[(&str, &str)]) -> String {
        match from(vars) {
            Err(ConfigError::Invalid { name, .. }) => name,
            other => panic!("{vars:?} should be refused, got {other:?}"),
        }
    }

    const PRODUCTION_SECRET: &str = "0123456789abcdef0123456789abcdef!";
    const PRODUCTION_DATABASE: &str = "postgres://app@db/app";

    #[test]
    fn the_settings_are_declared_without_clashes() {
        Config::command().debug_assert();
    }

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
        // Without either, the database is named first.
        let neither = from(&[("APP_ENV", "production")]).err();
        assert!(matches!(neither, Some(ConfigError::MissingDatabaseUrl)));
        assert!(
            error
                .map(|error| error.to_string())
                .is_some_and(|message| message.starts_with("DATABASE_URL must be set"))
        );
    }

    #[test]
    fn a_zero_where_zero_cannot_work_names_its_own_variable() {
        let must_be_positive = [
            "DATABASE_POOL_SIZE",
            "MAX_BODY_BYTES",
            "PASSWORD_HASHING_CONCURRENCY",
            "LOGIN_ATTEMPTS_PER_ADDRESS_PER_MINUTE",
            "LOGIN_ATTEMPTS_PER_ACCOUNT_PER_MINUTE",
            "ACCESS_TOKEN_TTL_SECONDS",
            "EXPIRY_SWEEP_SECONDS",
            "GRAPHQL_MAX_BATCH_OPERATIONS",
            "NATS_STREAM_REPLICAS",
            "RELAY_BATCH_SIZE",
            "WS_MAX_CONNECTIONS",
            "WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
            "WS_MAX_SUBSCRIPTIONS",
            "WS_CONNECTION_INIT_TIMEOUT_SECONDS",
            "WS_PING_INTERVAL_SECONDS",
            "LIVE_FEED_BUFFER",
        ];
        for name in must_be_positive {
            assert_eq!(refused(&[(name, "0")]), name);
            assert!(from(&[(name, "1")]).is_ok(), "{name}=1 is allowed");
        }
    }

    #[test]
    fn out_of_range_values_name_their_variable() {
        assert_eq!(refused(&[("STARTING_MINUTES", "-1")]), "STARTING_MINUTES");
        assert!(from(&[("STARTING_MINUTES", "0")]).is_ok());
        assert_eq!(refused(&[("OVERHEAD_PERCENT", "101")]), "OVERHEAD_PERCENT");
        assert_eq!(refused(&[("OVERHEAD_PERCENT", "-1")]), "OVERHEAD_PERCENT");
        assert!(from(&[("OVERHEAD_PERCENT", "100")]).is_ok());
        assert_eq!(
            refused(&[("LOCAL_POSTGRES_PORT", "70000")]),
            "LOCAL_POSTGRES_PORT"
        );
        assert_eq!(refused(&[("METRICS", "sometimes")]), "METRICS");
        assert_eq!(refused(&[("FORWARDED_HEADER", "via")]), "FORWARDED_HEADER");
        assert_eq!(
            refused(&[("TRUSTED_PROXIES", "10.0.0.0/8, nope")]),
            "TRUSTED_PROXIES"
        );
        assert_eq!(refused(&[("APP_ENV", "staging")]), "APP_ENV");
        assert_eq!(refused(&[("GRAPHIQL", "yes please")]), "GRAPHIQL");
    }

    #[test]
    fn a_subgraph_cannot_be_held_to_trusted_documents() {
        let both = [
            ("FEDERATION", "on"),
            ("TRUSTED_DOCUMENTS", "/etc/manifest.json"),
        ];
        assert_eq!(refused(&both), "TRUSTED_DOCUMENTS");
        assert!(from(&both[..1]).expect("a subgraph").graphql.federation);
        assert!(
            !from(&both[1..])
                .expect("trusted documents")
                .graphql
                .federation
        );
        assert_eq!(refused(&[("FEDERATION", "sometimes")]), "FEDERATION");
    }

    #[test]
    fn transaction_pooling_needs_a_pooler_and_a_direct_url() {
        let pooled = [
            ("DATABASE_POOL_MODE", "transaction"),
            ("DATABASE_URL", "postgres://app@pgbouncer:6432/app"),
        ];
        assert_eq!(refused(&pooled), "DATABASE_DIRECT_URL");
        assert_eq!(refused(&pooled[..1]), "DATABASE_POOL_MODE");
        let direct = ("DATABASE_DIRECT_URL", "postgres://app@db:5432/app");
        let config = from(&[pooled[0], pooled[1], direct]).expect("pooled with a direct url");
        assert_eq!(config.database.pool_mode, PoolMode::Transaction);
        assert_eq!(
            from(&[]).expect("defaults").database.pool_mode,
            PoolMode::Direct
        );
        assert_eq!(
            refused(&[("DATABASE_POOL_MODE", "statement")]),
            "DATABASE_POOL_MODE"
        );
    }

    #[test]
    fn a_short_jwt_secret_is_refused_in_any_environment() {
        assert_eq!(refused(&[("JWT_SECRET", "too-short")]), "JWT_SECRET");
    }

    #[test]
    fn production_turns_introspection_and_graphiql_off() {
        let config = from(&[
            ("APP_ENV", "production"),
            ("JWT_SECRET", PRODUCTION_SECRET),
            ("DATABASE_URL", PRODUCTION_DATABASE),
        ])
        .expect("valid config");
        assert!(!config.graphql.introspection && !config.graphql.graphiql);
        assert!(config.server.cors.origins.is_empty() && !config.server.cors.local_origins);
        let development = from(&[]).expect("valid config");
        assert!(development.graphql.introspection && development.graphql.graphiql);
        assert!(development.server.cors.local_origins);
        let quiet = from(&[
            ("GRAPHIQL", "false"),
            ("CORS_ORIGINS", "https://app.example"),
        ])
        .expect("valid config");
        assert!(!quiet.graphql.graphiql && !quiet.server.cors.local_origins);
        assert_eq!(quiet.server.cors.origins, ["https://app.example"]);
    }

    #[test]
    fn development_defaults_match_the_documented_ones() {
        let config = from(&[]).expect("valid config");
        assert_eq!(config.visits.starting_minutes, 120);
        assert_eq!(config.visits.overhead_percent, 15);
        assert_eq!(config.server.bind_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(config.server.metrics, MetricsExposure::SamePort);
        assert_eq!(config.database.lock_timeout, Duration::from_secs(3));
        assert_eq!(config.live.ping_interval, Duration::from_secs(15));
        assert!(config.database.url.is_none());
        assert!(config.auth.jwt_secret_is_ephemeral);
        assert_eq!(Config::development().visits.starting_minutes, 120);
    }

    #[test]
    fn values_are_read_as_their_types() {
        let config = from(&[
            ("LOCK_TIMEOUT_MS", "250"),
            ("METRICS", "127.0.0.1:9100"),
            ("FORWARDED_HEADER", "Forwarded"),
            ("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.1"),
            ("GRAPHQL_INTROSPECTION", "false"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
        ])
        .expect("valid config");
        assert_eq!(config.database.lock_timeout, Duration::from_millis(250));
        assert_eq!(
            config.server.metrics,
            MetricsExposure::Own("127.0.0.1:9100".parse().expect("an address"))
        );
        assert_eq!(
            config.server.trusted_proxies.header,
            ForwardedHeader::Forwarded
        );
        assert_eq!(config.server.trusted_proxies.nets.len(), 2);
        assert!(!config.graphql.introspection);
        assert_eq!(config.server.shutdown_grace, Duration::ZERO);
    }

    #[test]
    fn nats_url_takes_a_list_of_servers_and_is_off_by_default() {
        assert!(
            from(&[])
                .expect("valid config")
                .events
                .nats_servers
                .is_empty()
        );
        let config = from(&[("NATS_URL", "nats://a:4222, nats://b:4222,")]).expect("valid config");
        assert_eq!(
            config.events.nats_servers,
            vec!["nats://a:4222", "nats://b:4222"]
        );
        assert_eq!(config.events.outbox_retention, None);
        let kept = from(&[("OUTBOX_RETENTION_DAYS", "7")]).expect("valid config");
        assert_eq!(
            kept.events.outbox_retention,
            Some(Duration::from_secs(7 * 24 * 3600))
        );
    }

    #[test]
    fn consumers_run_everywhere_unless_named_or_none() {
        assert_eq!(
            *from(&[]).expect("valid config").events.consumers,
            *CONSUMERS
        );
        // Blank is unset, as for every variable.
        let blank = from(&[("CONSUMERS", " ")]).expect("valid config");
        assert_eq!(*blank.events.consumers, *CONSUMERS);
        let none = from(&[("CONSUMERS", " none ")]).expect("valid config");
        assert!(none.events.consumers.is_empty());
        let named = from(&[("CONSUMERS", "notifications, notifications,")]).expect("valid config");
        assert_eq!(*named.events.consumers, ["notifications"]);
        // The list is checked against the consumers' own names, which state.rs starts them by.
        assert!(CONSUMERS.contains(
            &<crate::notifications::NotificationsHandler as crate::events::consumer::Handler>::NAME
        ));
        for refused_list in [",", " , ", "notification", "none,notifications"] {
            assert_eq!(refused(&[("CONSUMERS", refused_list)]), "CONSUMERS");
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
        assert!(
            matches!(&error, Some(ConfigError::Invalid { name, reason }) if name == "STARTING_MINUTES" && reason.contains("lots")),
            "{error:?}"
        );
    }

    /// Every variable the code reads has a row in the docs' table, and every row names one the
    /// code reads.
    #[test]
    fn the_documented_variables_are_the_ones_read() {
        let docs = include_str!("../../docs/configuration.md");
        let documented: Vec<&str> = docs
            .lines()
            .filter_map(|line| line.strip_prefix("| `")?.split('`').next())
            .collect();
        let read_elsewhere = ["RUST_LOG", "LOG_FORMAT", "POSTGRES_BIN_DIR"];
        for variable in Config::variables() {
            assert!(
                documented.contains(&variable.as_str()),
                "{variable} is read but has no row in docs/configuration.md"
            );
        }
        for variable in &documented {
            assert!(
                Config::variables().iter().any(|read| read == variable)
                    || read_elsewhere.contains(variable),
                "docs/configuration.md documents {variable}, which nothing reads"
            );
        }
    }
}
