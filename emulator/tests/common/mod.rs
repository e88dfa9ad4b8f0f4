//! A SharedKey-signing client for the Batch emulator tests.

#![allow(dead_code)]

use axum::http::{HeaderMap, HeaderValue, Method};
use redwood_emulator::batch::auth::{sign, string_to_sign};
use redwood_emulator::batch::{BatchAccount, BatchEmulator};
use serde_json::Value;

pub const API: &str = "2025-06-01";
pub const KEY: &str = "cmVkd29vZC1iYXRjaC10ZXN0LWtleQ==";

pub struct Client {
    pub http: reqwest::Client,
    pub base: String,
    pub account: String,
    pub key: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }
}

impl Client {
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Value>,
    ) -> Reply {
        self.call_raw(
            method,
            path,
            query,
            body.map(|b| b.to_string().into_bytes()),
            true,
        )
        .await
    }

    /// A signed body-less call with extra headers (signed too, e.g. `ocp-range`).
    pub async fn call_with_headers(&self, method: Method, path: &str, extra: HeaderMap) -> Reply {
        self.send(method, path, &[], None, true, extra).await
    }

    pub async fn call_raw(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        with_api_version: bool,
    ) -> Reply {
        self.send(
            method,
            path,
            query,
            body,
            with_api_version,
            HeaderMap::new(),
        )
        .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<Vec<u8>>,
        with_api_version: bool,
        extra: HeaderMap,
    ) -> Reply {
        let mut pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if with_api_version {
            pairs.push(("api-version".into(), API.into()));
        }
        let mut headers = extra;
        headers.insert(
            "ocp-date",
            HeaderValue::from_str(&httpdate::fmt_http_date(std::time::SystemTime::now())).unwrap(),
        );
        headers.insert(
            "client-request-id",
            HeaderValue::from_static("3f2504e0-4f89-11d3-9a0c-0305e82c3301"),
        );
        if let Some(b) = &body {
            headers.insert(
                "content-type",
                HeaderValue::from_static("application/json; odata=minimalmetadata"),
            );
            headers.insert("content-length", HeaderValue::from(b.len()));
        }
        let text = string_to_sign(&method, &headers, &self.account, path, &pairs, false);
        let signature = sign(&self.key, &text).unwrap();
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!("SharedKey {}:{signature}", self.account)).unwrap(),
        );
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), &pairs).unwrap();
        let mut request = self.http.request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            url,
        );
        for (k, v) in &headers {
            if k != "content-length" {
                request = request.header(k.as_str(), v.as_bytes());
            }
        }
        if let Some(b) = body {
            request = request.body(b);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body,
            text,
        }
    }
}

/// An HTTP client (reqwest is built without a TLS provider of its own: install ring first).
pub fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub async fn emulator() -> (BatchEmulator, Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let account = BatchAccount {
        name: "testacct".into(),
        key: KEY.into(),
        bearer_token: Some("test-token".into()),
    };
    let emu = BatchEmulator::start(vec![account]).await.unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        base: emu.url("testacct").unwrap(),
        account: "testacct".into(),
        key: KEY.into(),
    };
    (emu, client)
}

/// Waits until a task is completed and returns it.
pub async fn completed(c: &Client, job: &str, task: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let r = c
            .call(Method::GET, &format!("/jobs/{job}/tasks/{task}"), &[], None)
            .await;
        if r.body["state"] == "completed" {
            return r.body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task {task} never completed: {}",
            r.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Whether a process of this machine runs (a zombie does not).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// Reads the `KEY=value` lines `redwood-emulator` prints until `# running`.
pub async fn printed_env(
    stdout: tokio::process::ChildStdout,
) -> std::collections::HashMap<String, String> {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut env = std::collections::HashMap::new();
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.starts_with("# running") {
            break;
        }
        if let Some((k, v)) = line.split_once('=') {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env
}
