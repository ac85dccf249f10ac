//! Readiness checks, typed by the catalogue and implemented once for every kind.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use redis::IntoConnectionInfo;
use tokio::net::TcpStream;

use crate::aws;
use crate::config::catalogue::{AwsApi, JsonCondition, Probe, SqlDialect};
use crate::config::template;
use crate::ports::LOOPBACK;

/// Longest a single attempt may take.
pub const ATTEMPT_DEADLINE: Duration = Duration::from_secs(3);

/// How much of an unexpected HTTP answer goes into the error.
const BODY_EXCERPT: usize = 200;

/// A sentence for progress messages: what the probe waits for.
pub fn describe(probe: &Probe, port: u16) -> String {
    match probe {
        Probe::Sql { .. } => format!("SELECT 1 on 127.0.0.1:{port}"),
        Probe::Http { path, status, json, .. } => {
            let codes: Vec<String> = status.iter().map(u16::to_string).collect();
            let mut text = format!("HTTP {} from GET http://127.0.0.1:{port}{path}", codes.join(" or "));
            if let Some(JsonCondition { pointer, one_of }) = json {
                text.push_str(&format!(" with `{pointer}` {}", one_of.join(" or ")));
            }
            text
        }
        Probe::Redis { .. } => format!("PONG to PING on 127.0.0.1:{port}"),
        Probe::AwsJson { action, .. } => format!("an answer to {action} on http://127.0.0.1:{port}"),
        Probe::Tcp { .. } => format!("a TCP connection on 127.0.0.1:{port}"),
    }
}

/// One attempt through the port published on 127.0.0.1; the error says what failed.
pub async fn check_once(probe: &Probe, port: u16, values: &BTreeMap<String, String>) -> Result<(), String> {
    let render = |t: &str| template::render(t, values);
    let attempt = async {
        match probe {
            Probe::Sql { dialect: SqlDialect::Mysql, username, password, database, .. } => {
                mysql_select_one(port, render(username), render(password), render(database)).await
            }
            Probe::Sql { dialect: SqlDialect::Postgres, username, password, database, .. } => {
                postgres_select_one(port, &render(username), &render(password), &render(database)).await
            }
            Probe::Http { path, status, json, .. } => http_get(port, &render(path), status, json.as_ref()).await,
            Probe::Redis { password, .. } => redis_ping(port, password.as_deref().map(render)).await,
            Probe::AwsJson { api, action, region, access_key_id, secret_access_key, .. } => {
                let credentials = aws::Credentials {
                    access_key_id: render(access_key_id),
                    secret_access_key: render(secret_access_key),
                };
                let endpoint = format!("http://{LOOPBACK}:{port}");
                let client = match api {
                    AwsApi::Secretsmanager => {
                        aws::Client::secrets_manager(&endpoint, &render(region), credentials, ATTEMPT_DEADLINE)
                    }
                    AwsApi::Ssm => aws::Client::ssm(&endpoint, &render(region), credentials, ATTEMPT_DEADLINE),
                }?;
                client.call(action, &serde_json::json!({})).await.map(drop).map_err(|e| e.to_string())
            }
            Probe::Tcp { .. } => TcpStream::connect((LOOPBACK, port)).await.map(drop).map_err(|e| e.to_string()),
        }
    };
    tokio::time::timeout(ATTEMPT_DEADLINE, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", ATTEMPT_DEADLINE.as_secs())))
}

async fn mysql_select_one(port: u16, username: String, password: String, database: String) -> Result<(), String> {
    let opts = mysql_async::OptsBuilder::default()
        .ip_or_hostname(LOOPBACK.to_string())
        .tcp_port(port)
        .prefer_socket(false)
        .user(Some(username))
        .pass(Some(password))
        .db_name(Some(database));
    let mut conn = mysql_async::Conn::new(opts).await.map_err(|e| e.to_string())?;
    let one: Option<i64> = conn.query_first("SELECT 1").await.map_err(|e| e.to_string())?;
    let _ = conn.disconnect().await;
    match one {
        Some(1) => Ok(()),
        other => Err(format!("SELECT 1 returned {other:?}")),
    }
}

async fn postgres_select_one(port: u16, username: &str, password: &str, database: &str) -> Result<(), String> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(LOOPBACK.to_string())
        .port(port)
        .user(username)
        .password(password)
        .dbname(database)
        .connect_timeout(ATTEMPT_DEADLINE)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| postgres_error(&e))?;
    let driver = tokio::spawn(connection);
    let result = client.query_one("SELECT 1", &[]).await.map_err(|e| postgres_error(&e));
    drop(client);
    let _ = driver.await;
    match result?.try_get::<_, i32>(0) {
        Ok(1) => Ok(()),
        other => Err(format!("SELECT 1 returned {other:?}")),
    }
}

/// tokio-postgres's own message, with the server's when there is one.
fn postgres_error(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => error.to_string(),
    }
}

async fn http_get(port: u16, path: &str, accepted: &[u16], json: Option<&JsonCondition>) -> Result<(), String> {
    let url = format!("http://{LOOPBACK}:{port}{path}");
    let client = super::http_client(ATTEMPT_DEADLINE)?;
    let response = client.get(&url).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if !accepted.contains(&status) {
        return Err(format!("HTTP {status}: {}", excerpt(&body)));
    }
    let Some(JsonCondition { pointer, one_of }) = json else {
        return Ok(());
    };
    let document: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("the answer is not JSON ({e}): {}", excerpt(&body)))?;
    let found = document.pointer(pointer).ok_or_else(|| format!("the answer has no `{pointer}`"))?;
    let found = match found {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if one_of.contains(&found) { Ok(()) } else { Err(format!("`{pointer}` is {found}, not {}", one_of.join(" or "))) }
}

fn excerpt(body: &str) -> String {
    let trimmed = body.trim();
    match trimmed.char_indices().nth(BODY_EXCERPT) {
        Some((cut, _)) => format!("{}…", &trimmed[..cut]),
        None => trimmed.to_string(),
    }
}

async fn redis_ping(port: u16, password: Option<String>) -> Result<(), String> {
    let mut settings = redis::RedisConnectionInfo::default().set_skip_set_lib_name();
    if let Some(password) = password {
        settings = settings.set_password(password);
    }
    let info = redis::ConnectionAddr::Tcp(LOOPBACK.to_string(), port)
        .into_connection_info()
        .map_err(|e| e.to_string())?
        .set_redis_settings(settings);
    let client = redis::Client::open(info).map_err(|e| e.to_string())?;
    let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
    let answer: String = redis::cmd("PING").query_async(&mut conn).await.map_err(|e| e.to_string())?;
    if answer == "PONG" { Ok(()) } else { Err(format!("PING answered {answer}")) }
}
