use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use home_visits::{config::Config, db, startup, state::AppState};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use testkit::{eventually, reply::Reply};
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The key every test app signs with, so tests can forge tokens the way an attacker would try to.
pub const TEST_JWT_SECRET: &[u8] = b"test-secret-that-is-at-least-32-bytes-long";
pub const PASSWORD: &str = "correct horse battery";
/// The document `TestApp::register` sends (a trusted-documents test lists it).
pub const REGISTER: &str = "mutation($input: RegisterInput!) { register(input: $input) { accessToken refreshToken user { id email firstName lastName minutes } } }";

const TEST_DATABASE_PREFIX: &str = "hvtest_";

/// URL of a server on which tests may create databases: `DATABASE_URL`'s server, else the
/// project-local cluster the service itself would provision.
async fn admin_url() -> SecretString {
    static ADMIN_URL: OnceCell<SecretString> = OnceCell::const_new();
    ADMIN_URL
        .get_or_init(|| async {
            let url = match std::env::var("DATABASE_URL") {
                Ok(url) if !url.trim().is_empty() => SecretString::from(url),
                _ => {
                    let settings =
                        Config::from_env().expect("valid configuration in the environment");
                    home_visits::local_postgres::ensure_running(
                        &settings.database.local_postgres_dir,
                        settings.database.local_postgres_port,
                    )
                    .await
                    .expect("a PostgreSQL to test against")
                }
            };
            sweep_leftover_databases(&url).await;
            url
        })
        .await
        .clone()
}

/// Drops test databases whose creating process is gone (a crashed or interrupted run).
async fn sweep_leftover_databases(admin_url: &SecretString) {
    let admin = Database::connect(admin_url.expose_secret())
        .await
        .expect("admin connection");
    let rows = admin
        .query_all_raw(Statement::from_string(
            admin.get_database_backend(),
            format!("SELECT datname FROM pg_database WHERE datname LIKE '{TEST_DATABASE_PREFIX}%'"),
        ))
        .await
        .expect("list test databases");
    for row in rows {
        let Ok(name) = row.try_get::<String>("", "datname") else {
            continue;
        };
        let owner_pid = name
            .trim_start_matches(TEST_DATABASE_PREFIX)
            .split('_')
            .next()
            .unwrap_or_default();
        if !Path::new("/proc").join(owner_pid).exists() {
            let _ = admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                .await;
        }
    }
    let _ = admin.close().await;
}

/// A database of a test's own on the test server, dropped when this value is.
pub struct TestDatabase {
    pub url: SecretString,
    name: String,
    admin_url: SecretString,
}

/// A database migrated once per test process, which every test's database is copied from: a copy
/// is one statement, where migrating is a dozen.
async fn migrated_template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE
        .get_or_init(|| async {
            let admin_url = admin_url().await;
            let name = format!("{TEST_DATABASE_PREFIX}{}_template", std::process::id());
            db::create_database_if_missing(&admin_url, &name)
                .await
                .expect("create the template database");
            let template = Database::connect(db::with_database(&admin_url, &name).expose_secret())
                .await
                .expect("connect to the template");
            let template = db::Database::direct(template);
            db::migrate(&template).await.expect("migrate the template");
            // A template must have no connections while it is copied.
            template.close().await.expect("close the template");
            name
        })
        .await
}

pub async fn fresh_database() -> TestDatabase {
    database_from(migrated_template().await).await
}

/// A database of a test's own with no tables yet: for what a first start must do.
pub async fn empty_database() -> TestDatabase {
    database_from("template0").await
}

async fn database_from(template: &str) -> TestDatabase {
    let admin_url = admin_url().await;
    let name = format!(
        "{TEST_DATABASE_PREFIX}{}_{}",
        std::process::id(),
        Uuid::new_v4().simple()
    );
    let admin = Database::connect(admin_url.expose_secret())
        .await
        .expect("admin connection");
    admin
        .execute_unprepared(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .await
        .expect("copy the template into the test database");
    let _ = admin.close().await;
    TestDatabase {
        url: db::with_database(&admin_url, &name),
        name,
        admin_url,
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = std::mem::take(&mut self.name);
        // Drop runs inside the test's runtime, which cannot block on itself: use a thread of its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async {
                let admin = Database::connect(admin_url.expose_secret()).await.ok()?;
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                admin.execute_unprepared(&sql).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop a test database; the next run sweeps it");
        }
    }
}

pub struct TestApp {
    pub address: String,
    /// Where `/metrics` is served when it has an address of its own.
    pub metrics_address: Option<String>,
    /// The harness's typed GraphQL client: one method per operation, failures as their codes.
    pub api: testkit::client::Client,
    /// For what is not GraphQL (headers, status codes, malformed bodies).
    pub http: reqwest::Client,
    /// A connection of the test's own, to look at what the service wrote.
    pub db: DatabaseConnection,
    /// The instance's own state (its pool, its metrics), for what a test runs as the service.
    pub state: Arc<AppState>,
    database_url: SecretString,
    /// Statements the application's requests have sent to PostgreSQL so far.
    pub statements: Arc<AtomicUsize>,
    /// The SQL of those statements, values written in, newest last.
    pub statement_log: Arc<std::sync::Mutex<Vec<String>>>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shut_down: std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    /// Declared last: fields drop in order, so the connection closes before the database is dropped.
    /// `None` for a sibling, which shares another app's database.
    _database: Option<TestDatabase>,
}

/// A count for a setting that must not be zero (`NonZeroU32`, `NonZeroUsize`, ...).
pub fn positive<N: std::str::FromStr>(count: u64) -> N {
    count
        .to_string()
        .parse()
        .unwrap_or_else(|_| panic!("{count} is not a positive count of this type"))
}

/// One signed-in user.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub access_token: String,
    pub refresh_token: String,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Starts the real application on a free port against a database of its own.
    /// A second instance of the application on this one's database, as in production.
    pub async fn spawn_sibling(&self) -> Self {
        self.spawn_sibling_with(|_| {}).await
    }

    pub async fn spawn_sibling_with(&self, customize: impl FnOnce(&mut Config)) -> Self {
        let url = self.database_url.clone();
        let mut sibling = Self::start(url, customize).await;
        sibling._database = None;
        sibling
    }

    /// `/readyz`: its status and its JSON body.
    pub async fn readiness(&self) -> (u16, Reply) {
        let response = self
            .http
            .get(format!("{}/readyz", self.address))
            .send()
            .await
            .expect("readyz answers");
        let status = response.status().as_u16();
        let body = response.json().await.expect("readyz answers JSON");
        (status, Reply::new(body))
    }

    /// The URL of the app's database, for processes the test starts against it.
    pub fn database_url(&self) -> String {
        self.database_url.expose_secret().to_string()
    }

    /// Stops the instance as a crash would, between two requests: its background tasks and their
    /// connections (the relay's leader lock among them) go with it.
    pub fn stop(&self) {
        self.server.abort();
    }

    pub async fn spawn_with(customize: impl FnOnce(&mut Config)) -> Self {
        let database = fresh_database().await;
        let mut app = Self::start(database.url.clone(), customize).await;
        app._database = Some(database);
        app
    }

    async fn start(database_url: SecretString, customize: impl FnOnce(&mut Config)) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter("warn")
            .try_init();
        let mut config = Config::development();
        config.database.url = Some(database_url);
        config.server.bind_addr = "127.0.0.1:0".parse().expect("a socket address");
        config.auth.jwt_secret = Some(SecretString::from(
            std::str::from_utf8(TEST_JWT_SECRET).expect("the test secret is text"),
        ));
        config.auth.jwt_secret_is_ephemeral = false;
        config.auth.password_hashing_concurrency = positive(2);
        customize(&mut config);

        let database_url = config.database.url.clone().expect("set above");
        let mut pool = db::connect_to(&database_url, &config)
            .await
            .expect("the application's pool");
        db::migrate(&pool).await.expect("migrations");
        let statements = Arc::new(AtomicUsize::new(0));
        let counter = statements.clone();
        let statement_log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = statement_log.clone();
        pool.set_metric_callback(move |info| {
            // Only what requests cost: the event machinery's background work (consumers polling
            // the log, the relay) runs on the same pool at its own pace.
            let sql = &info.statement.sql;
            let background = ["advisory", "event_", "outbox", "notifications"]
                .iter()
                .any(|mark| sql.contains(mark));
            if !background {
                counter.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut log) = log.lock() {
                    log.push(info.statement.to_string());
                }
            }
        });
        let app = startup::build_with_database(config, pool)
            .await
            .expect("the application starts");
        let address = format!("http://127.0.0.1:{}", app.port());
        let state = app.state().clone();
        let metrics_address = app
            .metrics_port()
            .map(|port| format!("http://127.0.0.1:{port}"));
        let (shut_down, on_shut_down) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = on_shut_down.await;
        }));

        let db = Database::connect(database_url.expose_secret())
            .await
            .expect("test connection");
        Self {
            api: testkit::client::Client::new(&address).expect("GraphQL client"),
            address,
            metrics_address,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            db,
            state,
            database_url,
            statements,
            statement_log,
            server,
            shut_down: std::sync::Mutex::new(Some(shut_down)),
            _database: None,
        }
    }

    /// Waits until the event machinery is idle: the notifications consumer, and the relay when
    /// there is one, have had nothing left for 200 ms. What they record themselves
    /// (`notification.added`) is in the log by then. Only the consumers this instance runs are
    /// seen: ask an instance that runs them.
    pub async fn settled(&self) {
        let quiet_since = std::sync::Mutex::new(None::<std::time::Instant>);
        eventually(
            Duration::from_secs(30),
            "the event machinery settled",
            || async {
                let (_, ready) = self.readiness().await;
                let consumers_idle = ready["consumers"]
                    .items()
                    .all(|consumer| consumer["lag"]["events"] == 0);
                let relay_idle = ready["relay"].is_null() || ready["relay"]["lag"]["events"] == 0;
                let mut quiet_since = quiet_since.lock().expect("the quiet clock");
                if !(consumers_idle && relay_idle) {
                    *quiet_since = None;
                    return None;
                }
                let since = *quiet_since.get_or_insert_with(std::time::Instant::now);
                (since.elapsed() >= Duration::from_millis(200)).then_some(())
            },
        )
        .await;
    }

    /// Shuts the instance down as SIGTERM would (gracefully), without waiting for it to finish.
    pub fn shut_down(&self) {
        if let Some(signal) = self.shut_down.lock().ok().and_then(|mut slot| slot.take()) {
            let _ = signal.send(());
        }
    }

    /// Sends a GraphQL request over POST and returns the whole response, read by path.
    pub async fn graphql(&self, token: Option<&str>, query: &str, variables: Value) -> Reply {
        self.api
            .send(token, query, variables)
            .await
            .map(Reply::new)
            .unwrap_or_else(|failure| panic!("no GraphQL response: {failure:?}"))
    }

    pub async fn register(
        &self,
        email: &str,
        password: &str,
        first_name: &str,
        last_name: &str,
    ) -> Reply {
        self.graphql(
            None,
            REGISTER,
            json!({ "input": { "email": email, "password": password, "firstName": first_name, "lastName": last_name } }),
        )
        .await
    }

    /// Registers `name@example.com` with [`PASSWORD`] and returns the signed-in user.
    pub async fn register_user(&self, name: &str) -> TestUser {
        let email = format!("{name}@example.com");
        let response = self.register(&email, PASSWORD, name, "Tester").await;
        auth_payload(&response, "register", &email)
    }

    pub async fn login(&self, email: &str, password: &str) -> Reply {
        self.graphql(
            None,
            "mutation($input: LoginInput!) { login(input: $input) { accessToken refreshToken user { id email } } }",
            json!({ "input": { "email": email, "password": password } }),
        )
        .await
    }

    pub async fn refresh_session(&self, refresh_token: &str) -> Reply {
        self.graphql(
            None,
            "mutation($input: RefreshSessionInput!) { refreshSession(input: $input) { accessToken refreshToken user { id } } }",
            json!({ "input": { "refreshToken": refresh_token } }),
        )
        .await
    }

    pub async fn logout(&self, token: &str) -> Reply {
        self.graphql(Some(token), "mutation { logout }", json!({}))
            .await
    }

    pub async fn delete_account(&self, token: &str, password: &str) -> Reply {
        self.graphql(
            Some(token),
            "mutation($input: DeleteAccountInput!) { deleteAccount(input: $input) }",
            json!({ "input": { "password": password } }),
        )
        .await
    }

    pub async fn me(&self, token: &str) -> Reply {
        self.graphql(
            Some(token),
            "{ me { id email firstName lastName minutes } }",
            json!({}),
        )
        .await
    }

    /// Runs one SQL query on the test database and returns the first column of each row.
    pub async fn query_column<T: sea_orm::TryGetable>(&self, sql: &str) -> Vec<T> {
        self.db
            .query_all_raw(Statement::from_string(self.db.get_database_backend(), sql))
            .await
            .expect("query")
            .iter()
            .map(|row| row.try_get_by_index::<T>(0).expect("column"))
            .collect()
    }
}

#[track_caller]
pub fn assert_error_code(response: &Reply, expected: &str) {
    assert_eq!(
        response.error_code(),
        Some(expected),
        "unexpected response: {response}"
    );
}

#[track_caller]
pub fn auth_payload(response: &Reply, field: &str, email: &str) -> TestUser {
    let payload = &response["data"][field];
    assert!(payload.is_object(), "{field} failed: {response}");
    TestUser {
        id: payload["user"]["id"].str().to_string(),
        email: email.to_string(),
        access_token: payload["accessToken"].str().to_string(),
        refresh_token: payload["refreshToken"].str().to_string(),
    }
}

pub const VISIT_FIELDS: &str = "id date minutes status tasks { name description } member { id email minutes } pal { id email minutes }";
pub const TRANSACTION_FIELDS: &str = "id minutes palCredit fee createdAt visit { id status } member { id email minutes } pal { id email minutes }";

/// A date that is valid for a new visit whatever the time of day.
pub fn tomorrow() -> String {
    (chrono::Utc::now().date_naive() + chrono::Days::new(1)).to_string()
}

impl TestApp {
    pub async fn request_visit(&self, token: &str, minutes: i32) -> Reply {
        self.request_visit_with(
            token,
            json!({ "date": tomorrow(), "minutes": minutes, "tasks": [{ "name": "Shopping" }] }),
        )
        .await
    }

    pub async fn request_visit_with(&self, token: &str, input: Value) -> Reply {
        self.graphql(
            Some(token),
            &format!("mutation($input: RequestVisitInput!) {{ requestVisit(input: $input) {{ {VISIT_FIELDS} }} }}"),
            json!({ "input": input }),
        )
        .await
    }

    /// Requests a visit that must succeed and returns its id.
    pub async fn requested_visit(&self, token: &str, minutes: i32) -> String {
        let response = self.request_visit(token, minutes).await;
        assert!(!response.has_errors(), "requestVisit failed: {response}");
        response["data"]["requestVisit"]["id"].str().to_string()
    }

    pub async fn accept_visit(&self, token: &str, visit_id: &str) -> Reply {
        self.graphql(
            Some(token),
            &format!("mutation($id: ID!) {{ acceptVisit(id: $id) {{ {VISIT_FIELDS} }} }}"),
            json!({ "id": visit_id }),
        )
        .await
    }

    pub async fn complete_visit(&self, token: &str, visit_id: &str) -> Reply {
        self.graphql(
            Some(token),
            &format!("mutation($id: ID!) {{ completeVisit(id: $id) {{ {TRANSACTION_FIELDS} }} }}"),
            json!({ "id": visit_id }),
        )
        .await
    }

    pub async fn cancel_visit(&self, token: &str, visit_id: &str) -> Reply {
        self.graphql(
            Some(token),
            &format!("mutation($id: ID!) {{ cancelVisit(id: $id) {{ {VISIT_FIELDS} }} }}"),
            json!({ "id": visit_id }),
        )
        .await
    }

    pub async fn visit(&self, token: &str, visit_id: &str) -> Reply {
        self.graphql(
            Some(token),
            &format!("query($id: ID!) {{ visit(id: $id) {{ {VISIT_FIELDS} }} }}"),
            json!({ "id": visit_id }),
        )
        .await
    }

    pub async fn visits(
        &self,
        token: &str,
        filter: Value,
        first: Option<i32>,
        after: Option<&str>,
    ) -> Reply {
        self.graphql(
            Some(token),
            &format!(
                "query($filter: VisitFilter, $first: Int, $after: String) {{ visits(filter: $filter, first: $first, after: $after) {{
                    totalCount edges {{ cursor node {{ {VISIT_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
            ),
            json!({ "filter": filter, "first": first, "after": after }),
        )
        .await
    }

    pub async fn transactions(
        &self,
        token: &str,
        first: Option<i32>,
        after: Option<&str>,
    ) -> Reply {
        self.graphql(
            Some(token),
            &format!(
                "query($first: Int, $after: String) {{ transactions(first: $first, after: $after) {{
                    totalCount edges {{ cursor node {{ {TRANSACTION_FIELDS} }} }} pageInfo {{ hasNextPage endCursor }} }} }}"
            ),
            json!({ "first": first, "after": after }),
        )
        .await
    }

    /// `me`'s minutes, outstanding minutes and available minutes.
    pub async fn minutes_of(&self, token: &str) -> (i64, i64, i64) {
        let balance = self
            .api
            .balance(token)
            .await
            .unwrap_or_else(|failure| panic!("no balance: {failure:?}"));
        (balance.minutes, balance.outstanding, balance.available)
    }

    /// The four invariants of the books, checked by the harness's own checker (one snapshot).
    pub async fn assert_invariants(&self) {
        let violations = testkit::invariants::check(&self.db)
            .await
            .expect("invariant query");
        assert!(violations.is_clean(), "invariants broken: {violations}");
    }
}

/// One row of the outbox, as the tests compare it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedEvent {
    pub event_type: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub aggregate_version: i64,
    pub payload: Value,
    pub traceparent: Option<String>,
}

impl TestApp {
    /// What the contexts that serve requests recorded, in the order it was written. Leaves out
    /// what the notifications consumer records on its own time (`notification.added`), which
    /// would otherwise race the assertions; `tests/api/notifications.rs` checks those.
    pub async fn recorded_events(&self) -> Vec<RecordedEvent> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT type, aggregate_type, aggregate_id::text AS aggregate_id, aggregate_version, \
                        payload::text AS payload, traceparent, version FROM outbox \
                 WHERE aggregate_type <> 'notification' ORDER BY position",
            ))
            .await
            .expect("outbox rows");
        rows.iter()
            .map(|row| {
                let version: i32 = row.try_get("", "version").expect("version");
                assert_eq!(version, 1, "every payload is at version 1");
                let payload: String = row.try_get("", "payload").expect("payload");
                RecordedEvent {
                    event_type: row.try_get("", "type").expect("type"),
                    aggregate_type: row.try_get("", "aggregate_type").expect("aggregate type"),
                    aggregate_id: row.try_get("", "aggregate_id").expect("aggregate id"),
                    aggregate_version: row.try_get("", "aggregate_version").expect("version"),
                    payload: serde_json::from_str(&payload).expect("JSON payload"),
                    traceparent: row.try_get("", "traceparent").expect("traceparent"),
                }
            })
            .collect()
    }

    /// The types of the outbox's events, in order.
    pub async fn recorded_types(&self) -> Vec<String> {
        self.recorded_events()
            .await
            .into_iter()
            .map(|event| event.event_type)
            .collect()
    }
}

/// The service's own binary (not the in-process app), for what only a process shows: its logs on
/// stderr, its signals, its exit code.
pub struct ServiceProcess {
    pub child: tokio::process::Child,
    pub port: u16,
    /// Its stderr (JSON lines), from the line after `listening` on.
    pub lines: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
    /// What it logged before `listening`, parsed.
    pub logged_before: Vec<serde_json::Value>,
}

/// Starts `home-visits serve` on `database_url` with JSON logs and a port of its own, plus `env`,
/// and returns once it says which port it listens on.
pub async fn start_service_process(database_url: &str, env: &[(&str, &str)]) -> ServiceProcess {
    use tokio::io::{AsyncBufReadExt, BufReader};

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_home-visits"))
        .arg("serve")
        .env("DATABASE_URL", database_url)
        .env("BIND_ADDR", "127.0.0.1:0")
        .env("JWT_SECRET", "a test secret for the service process")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("the service starts");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut logged_before = Vec::new();
    let port = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the service logs within a minute")
            .expect("readable")
            .expect("the service is still running");
        let entry: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if entry["message"] == "listening" {
            break entry["port"]
                .as_u64()
                .and_then(|port| u16::try_from(port).ok())
                .expect("the port");
        }
        logged_before.push(entry);
    };
    ServiceProcess {
        child,
        port,
        lines,
        logged_before,
    }
}
