//! The Functions host against the custom-handler protocol, driven by a handler that is not
//! Redwood's (a few lines of Python's `http.server`): queue triggers on Azurite (metadata,
//! output bindings, retries, the poison queue, a killed instance, `functionTimeout`), scaling
//! from zero and back, HTTP triggers with keys, and the admin calls.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use redwood_azure::queue::{Queue, QueueService};
use redwood_emulator::azurite::Azurite;
use redwood_emulator::functions::{FunctionsHost, FunctionsHostOptions};
use serde_json::Value;

const HANDLER: &str = r#"
import json, os, sys, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

LOG = os.environ["INVOCATION_LOG"]

class H(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def answer(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers(); self.wfile.write(data)
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/work":
            msg = body["Data"]["msg"]
            meta = body["Metadata"]
            with open(LOG, "a") as f:
                f.write(json.dumps({"msg": msg, "count": meta["DequeueCount"], "id": meta["Id"],
                                    "pid": os.getpid(), "method": meta["sys"]["MethodName"],
                                    "invocation": self.headers.get("X-Azure-Functions-InvocationId")}) + "\n")
            if msg == "fail":
                return self.answer(500, {"error": "asked to fail"})
            if msg.startswith("sleep:"):
                time.sleep(float(msg[6:]))
            return self.answer(200, {"Outputs": {"out": "done:" + msg}, "Logs": ["ran " + msg], "ReturnValue": None})
        if self.path == "/call":
            req = body["Data"]["req"]
            return self.answer(200, {"Outputs": {"res": {"statusCode": 201, "body": "echo:" + req["Body"] + ":" + req["Query"].get("x", ""),
                                                          "headers": {"x-handler": "python"}}}})
        self.answer(404, {})

ThreadingHTTPServer(("127.0.0.1", int(os.environ["FUNCTIONS_CUSTOMHANDLER_PORT"])), H).serve_forever()
"#;

/// Writes the app: a queue-triggered `work` (output queue `done`) and an HTTP `call`.
fn write_app(dir: &Path, function_timeout: &str) {
    std::fs::write(dir.join("handler.py"), HANDLER).unwrap();
    let script = dir.join("handler");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec python3 \"$(dirname \"$0\")/handler.py\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        dir.join("host.json"),
        format!(
            r#"{{"version": "2.0", "functionTimeout": "{function_timeout}",
               "customHandler": {{"description": {{"defaultExecutablePath": "handler"}}}},
               "extensions": {{"queues": {{"batchSize": 4, "maxDequeueCount": 2,
                   "visibilityTimeout": "00:00:00", "maxPollingInterval": "00:00:00.200"}}}}}}"#
        ),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::write(
        dir.join("work/function.json"),
        r#"{"bindings": [
            {"type": "queueTrigger", "direction": "in", "name": "msg", "queueName": "%TASKS%"},
            {"type": "queue", "direction": "out", "name": "out", "queueName": "done"}]}"#,
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("call")).unwrap();
    std::fs::write(
        dir.join("call/function.json"),
        r#"{"bindings": [
            {"type": "httpTrigger", "direction": "in", "name": "req", "authLevel": "function", "methods": ["post"]},
            {"type": "http", "direction": "out", "name": "res"}]}"#,
    )
    .unwrap();
}

struct Fixture {
    _azurite: Azurite,
    dir: tempfile::TempDir,
    host: FunctionsHost,
    tasks: Queue,
    done: Queue,
    poison: Queue,
}

async fn start(queue: &str, function_timeout: &str, lease: Duration) -> Fixture {
    let azurite = Azurite::start().await.expect("Azurite");
    let connection = azurite.connection_string(&azurite.accounts()[0]);
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), function_timeout);
    let service = QueueService::from_connection_string(&connection).unwrap();
    let done = service.queue("done").unwrap();
    done.create().await.unwrap();
    done.clear().await.unwrap();
    let mut options = FunctionsHostOptions::new(dir.path())
        .setting("AzureWebJobsStorage", &connection)
        .setting("TASKS", queue)
        .setting(
            "INVOCATION_LOG",
            dir.path().join("invocations.log").display().to_string(),
        );
    options.max_instances = 2;
    options.idle_timeout = Duration::from_secs(1);
    options.message_lease = lease;
    let host = FunctionsHost::start(options).await.expect("host");
    Fixture {
        tasks: service.queue(queue).unwrap(),
        poison: service.queue(&format!("{queue}-poison")).unwrap(),
        done,
        host,
        dir,
        _azurite: azurite,
    }
}

impl Fixture {
    async fn send(&self, text: &str) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(text);
        self.tasks.send(&encoded, Duration::ZERO).await.unwrap();
    }

    fn invocations(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("invocations.log"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The texts in the `done` queue, decoded, once `n` arrived.
    async fn done(&self, n: usize, within: Duration) -> Vec<String> {
        let started = Instant::now();
        let mut got = Vec::new();
        while got.len() < n {
            assert!(
                started.elapsed() < within,
                "only {got:?} done after {within:?}: {:?}",
                self.host.status()
            );
            for m in self
                .done
                .receive(32, Duration::from_secs(30))
                .await
                .unwrap()
            {
                let text = base64::engine::general_purpose::STANDARD
                    .decode(&m.text)
                    .unwrap();
                got.push(String::from_utf8(text).unwrap());
                self.done.delete(&m).await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        got.sort();
        got
    }
}

#[tokio::test]
async fn queue_messages_run_scale_from_zero_and_back() {
    let f = start("fh-work", "00:05:00", Duration::from_secs(30)).await;
    f.tasks.clear().await.unwrap();
    assert_eq!(
        f.host.status().instances,
        0,
        "no instance before there is work"
    );
    let started = Instant::now();
    f.send("first").await;
    assert_eq!(f.done(1, Duration::from_secs(20)).await, ["done:first"]);
    let cold = started.elapsed();
    for i in 0..20 {
        f.send(&format!("m{i:02}")).await;
    }
    let done = f.done(20, Duration::from_secs(30)).await;
    assert_eq!(
        done,
        (0..20).map(|i| format!("done:m{i:02}")).collect::<Vec<_>>()
    );
    let calls = f.invocations();
    assert_eq!(calls.len(), 21, "each message ran once: {calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c["count"] == 1 && c["method"] == "work")
    );
    assert!(
        calls
            .iter()
            .all(|c| c["invocation"].as_str().is_some_and(|i| i.len() == 36))
    );
    let status = f.host.status();
    assert_eq!(status.cold_starts, 1, "{status:?}");
    assert!(status.peak_instances <= 2, "{status:?}");
    assert_eq!(status.succeeded, 21, "{status:?}");
    eprintln!("cold start to first result: {cold:?}; {status:?}");
    // Idle: back to zero.
    let started = Instant::now();
    while f.host.status().instances > 0 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "still running: {:?}",
            f.host.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failing_message_goes_to_the_poison_queue() {
    let f = start("fh-poison", "00:05:00", Duration::from_secs(30)).await;
    f.tasks.clear().await.unwrap();
    f.poison.create().await.unwrap();
    f.poison.clear().await.unwrap();
    f.send("fail").await;
    f.send("fine").await;
    assert_eq!(f.done(1, Duration::from_secs(20)).await, ["done:fine"]);
    let started = Instant::now();
    let poisoned = loop {
        let got = f.poison.receive(32, Duration::from_secs(30)).await.unwrap();
        if !got.is_empty() {
            break got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            f.host.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(&poisoned[0].text)
        .unwrap();
    assert_eq!(
        text, b"fail",
        "the poison queue holds the message as it was"
    );
    let counts: Vec<u64> = f
        .invocations()
        .iter()
        .filter(|c| c["msg"] == "fail")
        .map(|c| c["count"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2], "delivered maxDequeueCount times");
    assert_eq!(f.tasks.approximate_count().await.unwrap(), 0);
    assert_eq!(f.host.status().poisoned, 1);
}

#[tokio::test]
async fn a_killed_instance_leaves_its_message_to_come_back() {
    let f = start("fh-kill", "00:05:00", Duration::from_secs(2)).await;
    f.tasks.clear().await.unwrap();
    f.send("sleep:3").await;
    let started = Instant::now();
    while !f.invocations().iter().any(|c| c["msg"] == "sleep:3") {
        assert!(started.elapsed() < Duration::from_secs(20));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let client = reqwest::Client::new();
    let killed: Value = client
        .post(format!("{}/_emulator/functions/kill", f.host.url()))
        .header("x-functions-key", f.host.master_key())
        .body("{}")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert!(killed["killed"].as_u64().is_some(), "{killed}");
    assert_eq!(f.done(1, Duration::from_secs(30)).await, ["done:sleep:3"]);
    let runs: Vec<Value> = f
        .invocations()
        .into_iter()
        .filter(|c| c["msg"] == "sleep:3")
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        (runs[0]["count"].as_u64(), runs[1]["count"].as_u64()),
        (Some(1), Some(2))
    );
    assert_ne!(
        runs[0]["pid"], runs[1]["pid"],
        "the second run is on a new instance"
    );
    assert_eq!(f.host.status().abandoned, 1, "{:?}", f.host.status());
}

#[tokio::test]
async fn function_timeout_stops_the_instance() {
    let f = start("fh-timeout", "00:00:01", Duration::from_secs(30)).await;
    f.tasks.clear().await.unwrap();
    f.poison.create().await.unwrap();
    f.poison.clear().await.unwrap();
    f.send("sleep:5").await;
    f.send("quick").await;
    assert_eq!(f.done(1, Duration::from_secs(20)).await, ["done:quick"]);
    let started = Instant::now();
    while f.host.status().poisoned == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{:?}",
            f.host.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let status = f.host.status();
    assert_eq!(status.timed_out, 2, "{status:?}");
    assert!(
        status.started >= 2,
        "a new instance after the timeout: {status:?}"
    );
}

#[tokio::test]
async fn http_triggers_need_their_key_and_admin_calls_the_master_key() {
    let f = start("fh-http", "00:05:00", Duration::from_secs(30)).await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/call", f.host.url());
    let key = f.host.function_key("call").unwrap().to_string();
    let none = client.post(&url).body("x").send().await.unwrap();
    assert_eq!(none.status(), 401);
    let wrong = client
        .post(format!("{url}?code=nope"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let get = client
        .get(format!("{url}?code={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    let ok = client
        .post(format!("{url}?code={key}&x=7"))
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 201);
    assert_eq!(ok.headers()["x-handler"], "python");
    assert_eq!(ok.text().await.unwrap(), "echo:hello:7");
    let by_header = client
        .post(&url)
        .header("x-functions-key", f.host.master_key())
        .body("m")
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 201);
    let missing = client
        .post(format!("{}/api/nope", f.host.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    for (method, path) in [
        ("GET", "/_emulator/functions/status"),
        ("GET", "/admin/functions/call/keys"),
    ] {
        let r = client
            .request(method.parse().unwrap(), format!("{}{path}", f.host.url()))
            .header("x-functions-key", &key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a function key");
    }
    let keys: Value = client
        .get(format!("{}/admin/functions/call/keys", f.host.url()))
        .header("x-functions-key", f.host.master_key())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .map(|t| serde_json::from_str(&t).unwrap())
        .unwrap();
    assert_eq!(keys["keys"][0]["value"], key.as_str());
    let bad = client
        .post(format!("{}/_emulator/functions/faults", f.host.url()))
        .header("x-functions-key", f.host.master_key())
        .body(r#"{"error_rate": 2}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(f.host.url().starts_with("http://127.0.0.1:"));
}

#[tokio::test]
async fn a_bad_app_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = FunctionsHost::start(FunctionsHostOptions::new(dir.path()))
        .await
        .unwrap_err();
    assert!(e.contains("host.json"), "{e}");
    write_app(dir.path(), "00:05:00");
    let e = FunctionsHost::start(FunctionsHostOptions::new(dir.path()))
        .await
        .unwrap_err();
    assert!(e.contains("%TASKS%"), "{e}");
    let options = FunctionsHostOptions::new(dir.path()).setting("TASKS", "q-1");
    let e = FunctionsHost::start(options).await.unwrap_err();
    assert!(e.contains("AzureWebJobsStorage"), "{e}");
}
