//! Readiness checks, typed by the catalogue and implemented once for every kind.

use std::collections::BTreeMap;
use std::time::Duration;

use mysql_async::prelude::Queryable;
use tokio::net::TcpStream;

use crate::config::catalogue::{Probe, SqlDialect};
use crate::config::template;
use crate::ports::LOOPBACK;

/// Longest a single attempt may take.
pub const ATTEMPT_DEADLINE: Duration = Duration::from_secs(3);

/// A sentence for progress messages: what the probe waits for.
pub fn describe(probe: &Probe, port: u16) -> String {
    match probe {
        Probe::Sql {
            dialect: SqlDialect::Mysql,
            ..
        } => format!("SELECT 1 on 127.0.0.1:{port}"),
        Probe::Tcp { .. } => format!("a TCP connection on 127.0.0.1:{port}"),
    }
}

/// One attempt through the port published on 127.0.0.1; the error says what failed.
pub async fn check_once(
    probe: &Probe,
    port: u16,
    values: &BTreeMap<String, String>,
) -> Result<(), String> {
    let attempt = async {
        match probe {
            Probe::Sql {
                dialect: SqlDialect::Mysql,
                username,
                password,
                database,
                ..
            } => {
                let opts = mysql_async::OptsBuilder::default()
                    .ip_or_hostname(LOOPBACK.to_string())
                    .tcp_port(port)
                    .prefer_socket(false)
                    .user(Some(template::render(username, values)))
                    .pass(Some(template::render(password, values)))
                    .db_name(Some(template::render(database, values)));
                let mut conn = mysql_async::Conn::new(opts)
                    .await
                    .map_err(|e| e.to_string())?;
                let one: Option<i64> = conn
                    .query_first("SELECT 1")
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.disconnect().await;
                match one {
                    Some(1) => Ok(()),
                    other => Err(format!("SELECT 1 returned {other:?}")),
                }
            }
            Probe::Tcp { .. } => TcpStream::connect((LOOPBACK, port))
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    };
    tokio::time::timeout(ATTEMPT_DEADLINE, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {}s", ATTEMPT_DEADLINE.as_secs())))
}
