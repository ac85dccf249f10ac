//! Resources a service asks for in devenv.yaml (S3 buckets, SQS queues, secrets, parameters
//! …), created through the substitute's own API once its probe passes. Each action is typed by
//! the catalogue and implemented once here; creating a resource that exists changes nothing,
//! and a secret or parameter whose value changed is brought up to date.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

use super::contents::Content;
use crate::aws;
use crate::config::catalogue::CreateResource;
use crate::config::template;

/// How long a signed request stays valid.
const SIGNED_FOR: Duration = Duration::from_secs(300);

/// What an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// It was there already.
    Present,
    /// It is there; the API does not say whether it was made now (creating it again is a
    /// no-op).
    Ensured,
    /// It was there with another value, which was replaced.
    Updated,
}

impl Outcome {
    pub fn word(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Present => "present",
            Outcome::Ensured => "ready",
            Outcome::Updated => "updated",
        }
    }
}

/// A sentence for progress messages and errors: what is being made.
pub fn describe(create: &CreateResource, name: &str, values: &BTreeMap<String, String>) -> String {
    let render = |t: &str| template::render(t, values);
    match create {
        CreateResource::S3Bucket { endpoint, .. } => format!("bucket `{name}` (S3 on {})", render(endpoint)),
        CreateResource::SqsQueue { endpoint } => format!("queue `{name}` (SQS on {})", render(endpoint)),
        CreateResource::SecretsmanagerSecret { endpoint, .. } => {
            format!("secret `{name}` (Secrets Manager on {})", render(endpoint))
        }
        CreateResource::SsmParameter { endpoint, .. } => {
            format!("parameter `{name}` (SSM Parameter Store on {})", render(endpoint))
        }
    }
}

/// One attempt to make sure the resource exists; the error says what failed.
pub async fn ensure(
    create: &CreateResource,
    name: &str,
    content: Option<&Content>,
    values: &BTreeMap<String, String>,
    deadline: Duration,
) -> Result<Outcome, String> {
    let render = |t: &str| template::render(t, values);
    let client = super::http_client(deadline)?;
    match create {
        CreateResource::S3Bucket { endpoint, region, access_key, secret_key } => {
            let endpoint: reqwest::Url =
                render(endpoint).parse().map_err(|e| format!("endpoint `{}`: {e}", render(endpoint)))?;
            let bucket = rusty_s3::Bucket::new(endpoint, rusty_s3::UrlStyle::Path, name.to_string(), render(region))
                .map_err(|e| e.to_string())?;
            let credentials = rusty_s3::Credentials::new(render(access_key), render(secret_key));
            ensure_bucket(&client, &bucket, &credentials).await
        }
        CreateResource::SqsQueue { endpoint } => ensure_queue(&client, &render(endpoint), name).await,
        CreateResource::SecretsmanagerSecret { endpoint, region, access_key_id, secret_access_key }
        | CreateResource::SsmParameter { endpoint, region, access_key_id, secret_access_key } => {
            let credentials =
                aws::Credentials { access_key_id: render(access_key_id), secret_access_key: render(secret_access_key) };
            let content = content.ok_or_else(|| format!("no value for `{name}`"))?;
            if matches!(create, CreateResource::SsmParameter { .. }) {
                let client = aws::Client::ssm(&render(endpoint), &render(region), credentials, deadline)?;
                ensure_parameter(&client, name, content).await
            } else {
                let client = aws::Client::secrets_manager(&render(endpoint), &render(region), credentials, deadline)?;
                ensure_secret(&client, name, &content.value).await
            }
        }
    }
}

/// `GetSecretValue`, then `CreateSecret` or `PutSecretValue` when it is missing or differs.
async fn ensure_secret(client: &aws::Client, name: &str, value: &str) -> Result<Outcome, String> {
    match client.call("GetSecretValue", &json!({"SecretId": name})).await {
        Ok(found) if found["SecretString"].as_str() == Some(value) => Ok(Outcome::Present),
        Ok(_) => {
            let request = json!({"SecretId": name, "SecretString": value});
            client.call("PutSecretValue", &request).await.map_err(|e| format!("PutSecretValue: {e}"))?;
            Ok(Outcome::Updated)
        }
        Err(error) if error.is_not_found() => {
            let request = json!({"Name": name, "SecretString": value});
            client.call("CreateSecret", &request).await.map_err(|e| format!("CreateSecret: {e}"))?;
            Ok(Outcome::Created)
        }
        Err(error) => Err(format!("GetSecretValue: {error}")),
    }
}

/// `GetParameter`, then `PutParameter` when it is missing or its value or type differs.
async fn ensure_parameter(client: &aws::Client, name: &str, content: &Content) -> Result<Outcome, String> {
    let kind = content.parameter_type.as_str();
    let outcome = match client.call("GetParameter", &json!({"Name": name, "WithDecryption": true})).await {
        Ok(found)
            if found["Parameter"]["Value"].as_str() == Some(content.value.as_str())
                && found["Parameter"]["Type"].as_str() == Some(kind) =>
        {
            return Ok(Outcome::Present);
        }
        Ok(_) => Outcome::Updated,
        Err(error) if error.is_not_found() => Outcome::Created,
        Err(error) => return Err(format!("GetParameter: {error}")),
    };
    let request = json!({"Name": name, "Value": content.value, "Type": kind, "Overwrite": outcome == Outcome::Updated});
    client.call("PutParameter", &request).await.map_err(|e| format!("PutParameter: {e}"))?;
    Ok(outcome)
}

async fn ensure_bucket(
    client: &reqwest::Client,
    bucket: &rusty_s3::Bucket,
    credentials: &rusty_s3::Credentials,
) -> Result<Outcome, String> {
    use rusty_s3::S3Action;
    let head = bucket.head_bucket(Some(credentials)).sign(SIGNED_FOR);
    let response = client.head(head).send().await.map_err(|e| e.to_string())?;
    match response.status().as_u16() {
        200 => return Ok(Outcome::Present),
        404 => {}
        status => return Err(format!("HeadBucket answered HTTP {status}")),
    }
    let create = bucket.create_bucket(credentials).sign(SIGNED_FOR);
    let response = client.put(create).send().await.map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    match status {
        200 => Ok(Outcome::Created),
        // Made by a concurrent request since the HEAD.
        409 if body.contains("BucketAlreadyOwnedByYou") => Ok(Outcome::Present),
        _ => Err(format!("CreateBucket answered HTTP {status}: {}", s3_error(&body))),
    }
}

/// The `<Code>` and `<Message>` of an S3 error document, or the start of the body.
fn s3_error(body: &str) -> String {
    let element = |tag: &str| {
        let open = format!("<{tag}>");
        let start = body.find(&open)? + open.len();
        let end = body[start..].find(&format!("</{tag}>"))? + start;
        Some(body[start..end].to_string())
    };
    match (element("Code"), element("Message")) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code,
        _ => body.chars().take(200).collect(),
    }
}

async fn ensure_queue(client: &reqwest::Client, endpoint: &str, name: &str) -> Result<Outcome, String> {
    let mut request = serde_json::json!({ "QueueName": name });
    if name.ends_with(".fifo") {
        request["Attributes"] = serde_json::json!({ "FifoQueue": "true" });
    }
    let response = client
        .post(endpoint)
        .header("X-Amz-Target", "AmazonSQS.CreateQueue")
        .header("Content-Type", "application/x-amz-json-1.0")
        .body(request.to_string())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    if status != 200 {
        let message = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("message").or_else(|| v.get("Message")).and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| body.chars().take(200).collect());
        return Err(format!("CreateQueue answered HTTP {status}: {message}"));
    }
    // CreateQueue returns the queue whether it made it or found it.
    Ok(Outcome::Ensured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents() {
        let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code><Message>Forbidden</Message></Error>";
        assert_eq!(s3_error(body), "AccessDenied: Forbidden");
        assert_eq!(s3_error("<Error><Code>X</Code></Error>"), "X");
        assert_eq!(s3_error("plain"), "plain");
    }
}
