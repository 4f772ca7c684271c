//! A small typed GraphQL client: one method per operation the harness uses, and every failure
//! reduced to the error code a real client would act on.
use std::time::Duration;

use serde_json::{Value, json};

/// Why an operation did not succeed: the GraphQL `extensions.code`, or `TRANSPORT` when the
/// instance could not be reached (connection refused or reset: the instance is down or was killed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: String,
    pub message: String,
    pub retryable: bool,
}

impl Failure {
    pub const TRANSPORT: &'static str = "TRANSPORT";

    fn transport(error: &reqwest::Error) -> Self {
        Self {
            code: Self::TRANSPORT.into(),
            message: error.to_string(),
            retryable: true,
        }
    }

    pub fn is_transport(&self) -> bool {
        self.code == Self::TRANSPORT
    }

    /// The code with a marker for retryable answers, for tallies.
    pub fn label(&self) -> String {
        if self.retryable && !self.is_transport() {
            format!("{}(retryable)", self.code)
        } else {
            self.code.clone()
        }
    }
}

pub type Outcome<T> = Result<T, Failure>;

#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: String,
    pub token: String,
    pub minutes: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Payment {
    pub minutes: i64,
    pub pal_credit: i64,
    pub fee: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    pub minutes: i64,
    pub outstanding: i64,
    pub available: i64,
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pub base_url: String,
}

impl Client {
    pub fn new(base_url: &str) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            base_url: base_url.trim_end_matches('/').to_string(),
        })
    }

    /// Runs one operation and returns its `data`, or the first error.
    pub async fn execute(
        &self,
        token: Option<&str>,
        query: &str,
        variables: Value,
    ) -> Outcome<Value> {
        let body = self.send(token, query, variables).await?;
        if let Some(error) = body["errors"].get(0) {
            return Err(Failure {
                code: error["extensions"]["code"]
                    .as_str()
                    .unwrap_or("NO_CODE")
                    .to_string(),
                message: error["message"].as_str().unwrap_or_default().to_string(),
                retryable: error["extensions"]["retryable"] == true,
            });
        }
        Ok(body["data"].clone())
    }

    /// Runs one operation and returns the whole response (`data` and `errors`); fails only when no
    /// JSON response came back.
    pub async fn send(&self, token: Option<&str>, query: &str, variables: Value) -> Outcome<Value> {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base_url))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .map_err(|error| Failure::transport(&error))?;
        let status = response.status();
        response.json().await.map_err(|error| Failure {
            code: format!("HTTP_{}", status.as_u16()),
            message: error.to_string(),
            retryable: false,
        })
    }

    /// `/readyz`'s JSON, whatever its status; `None` when the instance does not answer.
    pub async fn readiness(&self) -> Option<Value> {
        let response = self
            .http
            .get(format!("{}/readyz", self.base_url))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// `/readyz`'s status code; `None` when the instance does not answer at all.
    pub async fn readiness_status(&self) -> Option<u16> {
        self.http
            .get(format!("{}/readyz", self.base_url))
            .send()
            .await
            .ok()
            .map(|response| response.status().as_u16())
    }

    /// Whether anything answers HTTP at the base URL (ready or not).
    pub async fn answers(&self) -> bool {
        self.http
            .get(format!("{}/healthz", self.base_url))
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .is_ok()
    }

    pub async fn is_ready(&self) -> bool {
        match self
            .http
            .get(format!("{}/readyz", self.base_url))
            .send()
            .await
        {
            Ok(response) => response.status().is_success(),
            Err(_) => false,
        }
    }

    pub async fn register(&self, email: &str, password: &str) -> Outcome<Session> {
        let data = self
            .execute(
                None,
                "mutation($input: RegisterInput!) { register(input: $input) { accessToken user { id minutes } } }",
                json!({ "input": { "email": email, "password": password, "firstName": "Harness", "lastName": "User" } }),
            )
            .await?;
        let payload = &data["register"];
        Ok(Session {
            user_id: text(&payload["user"]["id"])?,
            token: text(&payload["accessToken"])?,
            minutes: number(&payload["user"]["minutes"])?,
        })
    }

    /// Requests a visit for tomorrow with one task; returns its id.
    pub async fn request_visit(
        &self,
        token: &str,
        minutes: i64,
        idempotency_key: Option<&str>,
    ) -> Outcome<String> {
        let date = (chrono::Utc::now().date_naive() + chrono::Days::new(1)).to_string();
        let data = self
            .execute(
                Some(token),
                "mutation($input: RequestVisitInput!) { requestVisit(input: $input) { id } }",
                json!({ "input": { "date": date, "minutes": minutes, "tasks": [{ "name": "Company" }], "idempotencyKey": idempotency_key } }),
            )
            .await?;
        text(&data["requestVisit"]["id"])
    }

    pub async fn accept_visit(&self, token: &str, visit_id: &str) -> Outcome<()> {
        self.execute(
            Some(token),
            "mutation($id: ID!) { acceptVisit(id: $id) { id } }",
            json!({ "id": visit_id }),
        )
        .await
        .map(drop)
    }

    pub async fn complete_visit(&self, token: &str, visit_id: &str) -> Outcome<Payment> {
        let data = self
            .execute(
                Some(token),
                "mutation($id: ID!) { completeVisit(id: $id) { minutes palCredit fee } }",
                json!({ "id": visit_id }),
            )
            .await?;
        let paid = &data["completeVisit"];
        Ok(Payment {
            minutes: number(&paid["minutes"])?,
            pal_credit: number(&paid["palCredit"])?,
            fee: number(&paid["fee"])?,
        })
    }

    pub async fn cancel_visit(&self, token: &str, visit_id: &str) -> Outcome<()> {
        self.execute(
            Some(token),
            "mutation($id: ID!) { cancelVisit(id: $id) { id } }",
            json!({ "id": visit_id }),
        )
        .await
        .map(drop)
    }

    pub async fn balance(&self, token: &str) -> Outcome<Balance> {
        let data = self
            .execute(
                Some(token),
                "{ me { minutes outstandingMinutes availableMinutes } }",
                json!({}),
            )
            .await?;
        let me = &data["me"];
        Ok(Balance {
            minutes: number(&me["minutes"])?,
            outstanding: number(&me["outstandingMinutes"])?,
            available: number(&me["availableMinutes"])?,
        })
    }
}

fn unexpected(value: &Value) -> Failure {
    Failure {
        code: "UNEXPECTED_RESPONSE".into(),
        message: format!("unexpected response shape: {value}"),
        retryable: false,
    }
}

fn text(value: &Value) -> Outcome<String> {
    value
        .as_str()
        .map(String::from)
        .ok_or_else(|| unexpected(value))
}

fn number(value: &Value) -> Outcome<i64> {
    value.as_i64().ok_or_else(|| unexpected(value))
}
