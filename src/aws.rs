//! A small client for AWS APIs that speak the JSON protocol (Secrets Manager, SSM), signed with
//! AWS Signature Version 4 in the `Authorization` header, as the AWS SDKs send them. Enough for
//! devenv to make secrets and parameters in a substitute; not a general SDK.

use std::fmt::Write as _;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// The content type of the AWS JSON 1.1 protocol.
const JSON_1_1: &str = "application/x-amz-json-1.1";

/// Static credentials, as `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` give them.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// One AWS service at one endpoint: `secretsmanager` or `ssm`, with the prefix of its
/// `X-Amz-Target` header (`secretsmanager`, `AmazonSSM`).
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoint: reqwest::Url,
    region: String,
    signing_name: &'static str,
    target_prefix: &'static str,
    credentials: Credentials,
}

/// What went wrong with one call: the transport, or the service's own error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    Transport(String),
    /// The service answered with an error document: its HTTP status, type (the part of
    /// `__type` after `#`, e.g. `ResourceNotFoundException`) and message.
    Service {
        status: u16,
        code: String,
        message: String,
    },
}

impl CallError {
    /// Whether the service said that the thing asked for does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CallError::Service { code, .. } if code == "ResourceNotFoundException" || code == "ParameterNotFound")
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Transport(message) => f.write_str(message),
            CallError::Service { status, code, message } => write!(f, "HTTP {status} {code}: {message}"),
        }
    }
}

impl Client {
    /// A Secrets Manager client.
    pub fn secrets_manager(
        endpoint: &str,
        region: &str,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, String> {
        Self::new(endpoint, region, "secretsmanager", "secretsmanager", credentials, timeout)
    }

    /// An SSM (Parameter Store) client.
    pub fn ssm(endpoint: &str, region: &str, credentials: Credentials, timeout: Duration) -> Result<Self, String> {
        Self::new(endpoint, region, "ssm", "AmazonSSM", credentials, timeout)
    }

    fn new(
        endpoint: &str,
        region: &str,
        signing_name: &'static str,
        target_prefix: &'static str,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, String> {
        let endpoint: reqwest::Url = endpoint.parse().map_err(|e| format!("endpoint `{endpoint}`: {e}"))?;
        if endpoint.host_str().is_none() {
            return Err(format!("endpoint `{endpoint}` has no host"));
        }
        crate::init_tls();
        let http = reqwest::Client::builder().no_proxy().timeout(timeout).build().map_err(|e| e.to_string())?;
        Ok(Client { http, endpoint, region: region.to_string(), signing_name, target_prefix, credentials })
    }

    /// Calls `action` (e.g. `GetSecretValue`) with a JSON request; the answer's JSON document.
    pub async fn call(&self, action: &str, request: &Value) -> Result<Value, CallError> {
        let body = request.to_string();
        let target = format!("{}.{action}", self.target_prefix);
        let signed = sign(
            &Request {
                method: "POST",
                url: &self.endpoint,
                headers: &[("content-type", JSON_1_1), ("x-amz-target", &target)],
                body: body.as_bytes(),
            },
            &Scope { region: &self.region, service: self.signing_name, credentials: &self.credentials },
            jiff::Timestamp::now(),
        );
        let mut builder =
            self.http.post(self.endpoint.clone()).header("Content-Type", JSON_1_1).header("X-Amz-Target", &target);
        for (name, value) in &signed {
            builder = builder.header(*name, value);
        }
        let response = builder.body(body).send().await.map_err(|e| CallError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| CallError::Transport(e.to_string()))?;
        let document: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(document);
        }
        let field = |name: &str| document.get(name).and_then(Value::as_str).map(str::to_string);
        let code = field("__type").map(|t| t.rsplit('#').next().unwrap_or_default().to_string()).unwrap_or_default();
        let message =
            field("message").or_else(|| field("Message")).unwrap_or_else(|| text.trim().chars().take(200).collect());
        Err(CallError::Service { status, code, message })
    }
}

/// The parts of a request that are signed.
pub struct Request<'a> {
    pub method: &'a str,
    pub url: &'a reqwest::Url,
    /// Headers besides `host` and `x-amz-date`, lowercase names.
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
}

/// Who signs, for which region and service.
pub struct Scope<'a> {
    pub region: &'a str,
    pub service: &'a str,
    pub credentials: &'a Credentials,
}

/// The headers that sign `request` at `now`: `X-Amz-Date` and `Authorization` (AWS Signature
/// Version 4, every given header signed).
pub fn sign(request: &Request<'_>, scope: &Scope<'_>, now: jiff::Timestamp) -> Vec<(&'static str, String)> {
    let date_time = now.strftime("%Y%m%dT%H%M%SZ").to_string();
    let date = &date_time[..8];
    let payload_hash = hex(&Sha256::digest(request.body));
    let host = match request.url.port() {
        Some(port) => format!("{}:{port}", request.url.host_str().unwrap_or_default()),
        None => request.url.host_str().unwrap_or_default().to_string(),
    };
    let mut headers: Vec<(String, String)> =
        request.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string())).collect();
    headers.push(("host".to_string(), host));
    headers.push(("x-amz-date".to_string(), date_time.clone()));
    headers.sort();
    let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let canonical_headers: String = headers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
    let canonical_request = format!(
        "{}\n{}\n{}\n{canonical_headers}\n{signed_headers}\n{payload_hash}",
        request.method,
        canonical_path(request.url.path()),
        canonical_query(request.url),
    );
    let credential_scope = format!("{date}/{}/{}/aws4_request", scope.region, scope.service);
    let string_to_sign =
        format!("AWS4-HMAC-SHA256\n{date_time}\n{credential_scope}\n{}", hex(&Sha256::digest(canonical_request)));
    let mut key = hmac(format!("AWS4{}", scope.credentials.secret_access_key).as_bytes(), date.as_bytes());
    for part in [scope.region, scope.service, "aws4_request"] {
        key = hmac(&key, part.as_bytes());
    }
    let signature = hex(&hmac(&key, string_to_sign.as_bytes()));
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={}/{credential_scope}, SignedHeaders={signed_headers}, Signature={signature}",
        scope.credentials.access_key_id
    );
    vec![("X-Amz-Date", date_time), ("Authorization", authorization)]
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// RFC 3986 encoding of everything but the unreserved characters (and `/` in paths).
fn uri_encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(byte as char),
            b'/' if keep_slash => out.push('/'),
            _ => {
                let _ = write!(out, "%{byte:02X}");
            }
        }
    }
    out
}

fn canonical_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_string();
    }
    // The URL's path is already percent-encoded; decode it before encoding it the AWS way.
    let decoded = percent_decode(path);
    uri_encode(&decoded, true)
}

fn canonical_query(url: &reqwest::Url) -> String {
    let mut pairs: Vec<(String, String)> =
        url.query_pairs().map(|(k, v)| (uri_encode(&k, false), uri_encode(&v, false))).collect();
    pairs.sort();
    pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&")
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = text.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example_credentials() -> Credentials {
        // AWS's documented example key pair.
        Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        }
    }

    fn at(text: &str) -> jiff::Timestamp {
        text.parse().unwrap()
    }

    fn authorization(headers: &[(&'static str, String)]) -> String {
        headers.iter().find(|(name, _)| *name == "Authorization").unwrap().1.clone()
    }

    /// The example of AWS's Signature Version 4 documentation ("Examples of the complete
    /// Signature Version 4 signing process"): IAM ListUsers.
    #[test]
    fn the_documented_iam_example_signs_as_aws_says() {
        let url: reqwest::Url = "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08".parse().unwrap();
        let request = Request {
            method: "GET",
            url: &url,
            headers: &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")],
            body: b"",
        };
        let credentials = example_credentials();
        let scope = Scope { region: "us-east-1", service: "iam", credentials: &credentials };
        let headers = sign(&request, &scope, at("2015-08-30T12:36:00Z"));
        assert_eq!(
            authorization(&headers),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert!(headers.contains(&("X-Amz-Date", "20150830T123600Z".to_string())));
    }

    /// `get-vanilla` and `post-vanilla` of AWS's Signature Version 4 test suite.
    #[test]
    fn the_test_suite_vanilla_requests_sign_as_aws_says() {
        let url: reqwest::Url = "https://example.amazonaws.com/".parse().unwrap();
        let credentials = example_credentials();
        let scope = Scope { region: "us-east-1", service: "service", credentials: &credentials };
        let get =
            sign(&Request { method: "GET", url: &url, headers: &[], body: b"" }, &scope, at("2015-08-30T12:36:00Z"));
        assert!(
            authorization(&get).ends_with(
                "SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
            ),
            "{}",
            authorization(&get)
        );
        let post =
            sign(&Request { method: "POST", url: &url, headers: &[], body: b"" }, &scope, at("2015-08-30T12:36:00Z"));
        assert!(
            authorization(&post)
                .ends_with("Signature=5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"),
            "{}",
            authorization(&post)
        );
    }

    /// A Secrets Manager call as this client sends it, signed the same by botocore 1.43
    /// (`SigV4Auth(credentials, "secretsmanager", "us-east-1")` at the same instant).
    #[test]
    fn a_json_protocol_call_signs_as_botocore_does() {
        let url: reqwest::Url = "http://127.0.0.1:5000/".parse().unwrap();
        let request = Request {
            method: "POST",
            url: &url,
            headers: &[("content-type", JSON_1_1), ("x-amz-target", "secretsmanager.GetSecretValue")],
            body: br#"{"SecretId":"a/b"}"#,
        };
        let credentials = example_credentials();
        let scope = Scope { region: "us-east-1", service: "secretsmanager", credentials: &credentials };
        assert_eq!(
            authorization(&sign(&request, &scope, at("2015-08-30T12:36:00Z"))),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/secretsmanager/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-target, Signature=7b3b951337a4d6f6a946d995ab9f6e3d7d8c704e10162aacd8eebbabc3928ca6"
        );
    }

    #[test]
    fn paths_and_queries_are_encoded_the_aws_way() {
        let url: reqwest::Url = "http://127.0.0.1:5000/a%20b/c?b=2&a=x%2Fy".parse().unwrap();
        assert_eq!(canonical_path(url.path()), "/a%20b/c");
        assert_eq!(canonical_query(&url), "a=x%2Fy&b=2");
        assert_eq!(canonical_path(""), "/");
    }

    #[test]
    fn service_errors_say_whether_the_thing_is_missing() {
        let missing =
            CallError::Service { status: 400, code: "ResourceNotFoundException".into(), message: "no".into() };
        assert!(missing.is_not_found());
        assert!(!CallError::Transport("refused".into()).is_not_found());
        assert_eq!(missing.to_string(), "HTTP 400 ResourceNotFoundException: no");
    }
}
