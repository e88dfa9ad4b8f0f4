//! The Batch emulator driven through plain HTTP with SharedKey-signed requests: every endpoint,
//! and the errors the service returns for bad input.

mod common;

use axum::http::Method;
use common::{API, Client, emulator};
use serde_json::{Value, json};

#[tokio::test]
async fn pools_and_their_errors() {
    let (_emu, c) = emulator().await;
    let pool = json!({"id": "p1", "vmSize": "standard_d2s_v3", "targetDedicatedNodes": 2, "taskSlotsPerNode": 4});
    let r = c
        .call(Method::POST, "/pools", &[], Some(pool.clone()))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.headers.contains_key("etag") && r.headers.contains_key("last-modified"));
    assert!(
        r.headers["location"]
            .to_str()
            .unwrap()
            .ends_with("/pools/p1")
    );
    assert_eq!(
        r.headers["client-request-id"],
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
    );
    assert!(r.headers.contains_key("request-id"));

    let r = c.call(Method::POST, "/pools", &[], Some(pool)).await;
    assert_eq!((r.status, r.code()), (409, "PoolExists"));
    assert_eq!(r.body["message"]["lang"], "en-US");
    assert!(
        r.body["odata.metadata"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1")
    );

    let r = c.call(Method::GET, "/pools/p1", &[], None).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["state"], "active");
    assert_eq!(r.body["currentDedicatedNodes"], 2);
    assert_eq!(r.body["taskSlotsPerNode"], 4);

    let r = c
        .call(
            Method::POST,
            "/pools/p1/resize",
            &[],
            Some(json!({"targetDedicatedNodes": 5})),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = c.call(Method::GET, "/pools/p1", &[], None).await;
    assert_eq!(r.body["targetDedicatedNodes"], 5);

    let r = c.call(Method::GET, "/pools/nope", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "PoolNotFound"));

    let r = c
        .call(Method::POST, "/pools", &[], Some(json!({"id": "p2"})))
        .await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredProperty"));
    assert_eq!(r.body["values"][0]["value"], "vmSize");

    let r = c
        .call(
            Method::POST,
            "/pools",
            &[],
            Some(json!({"id": "bad id", "vmSize": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidPropertyValue"));
    let r = c
        .call(
            Method::POST,
            "/pools",
            &[],
            Some(json!({"id": "p3", "vmSize": "x", "targetDedicatedNodes": "many"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidPropertyValue"));
    assert_eq!(r.body["values"][0]["value"], "targetDedicatedNodes");

    let r = c
        .call(
            Method::POST,
            "/pools",
            &[],
            Some(json!({"id": "p5", "vmSize": "x", "vmSise": "typo"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "UnsupportedProperty"));
    assert_eq!(r.body["values"][0]["value"], "vmSise");

    let r = c
        .call_raw(
            Method::POST,
            "/pools",
            &[],
            Some(b"{not json".to_vec()),
            true,
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestBody"));
    let r = c
        .call(Method::POST, "/pools", &[], Some(json!([1, 2])))
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidRequestBody"));
    let huge = json!({"id": "p4", "vmSize": "x", "pad": "x".repeat(2 << 20)});
    let r = c.call(Method::POST, "/pools", &[], Some(huge)).await;
    assert_eq!((r.status, r.code()), (413, "RequestBodyTooLarge"));

    let r = c.call(Method::DELETE, "/pools/p1", &[], None).await;
    assert_eq!(r.status, 202);
    let r = c.call(Method::DELETE, "/pools/p1", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "PoolNotFound"));
}

#[tokio::test]
async fn api_version_and_auth_are_checked() {
    let (_emu, c) = emulator().await;
    let r = c.call_raw(Method::GET, "/pools", &[], None, false).await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredQueryParameter"));
    let r = c
        .call(
            Method::GET,
            "/pools",
            &[("api-version", "2019-01-01")],
            None,
        )
        .await;
    // Two api-version values: the first (unknown) one is rejected.
    assert_eq!((r.status, r.code()), (400, "InvalidQueryParameterValue"));

    let wrong = Client {
        key: "d3Jvbmcta2V5".into(),
        ..Client {
            http: c.http.clone(),
            base: c.base.clone(),
            account: c.account.clone(),
            key: String::new(),
        }
    };
    let r = wrong.call(Method::GET, "/pools", &[], None).await;
    assert_eq!((r.status, r.code()), (403, "AuthenticationFailed"));

    let http = common::http();
    let url = format!("{}/pools?api-version={API}", c.base);
    let r = http.get(&url).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http
        .get(&url)
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = http.get(&url).bearer_auth("other").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);
}

#[tokio::test]
async fn jobs_tasks_collections_filters_and_paging() {
    let (_emu, c) = emulator().await;
    let r = c
        .call(
            Method::POST,
            "/jobs",
            &[],
            Some(json!({"id": "j1", "poolInfo": {"poolId": "p1"}})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/jobs",
            &[],
            Some(json!({"id": "j1", "poolInfo": {"poolId": "p1"}})),
        )
        .await;
    assert_eq!((r.status, r.code()), (409, "JobExists"));
    let r = c
        .call(Method::POST, "/jobs", &[], Some(json!({"id": "j2"})))
        .await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredProperty"));
    let r = c.call(Method::GET, "/jobs/none", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "JobNotFound"));

    let r = c
        .call(
            Method::POST,
            "/jobs/j1/tasks",
            &[],
            Some(json!({"id": "t0", "commandLine": "/bin/true"})),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let r = c
        .call(
            Method::POST,
            "/jobs/j1/tasks",
            &[],
            Some(json!({"id": "t9"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "MissingRequiredProperty"));
    let r = c
        .call(
            Method::POST,
            "/jobs/none/tasks",
            &[],
            Some(json!({"id": "t", "commandLine": "x"})),
        )
        .await;
    assert_eq!((r.status, r.code()), (404, "JobNotFound"));

    let tasks: Vec<Value> = (1..=3)
        .map(|i| json!({"id": format!("t{i}"), "commandLine": "/bin/true"}))
        .chain([json!({"id": "t0", "commandLine": "/bin/true"})])
        .collect();
    let r = c
        .call(
            Method::POST,
            "/jobs/j1/addtaskcollection",
            &[],
            Some(json!({"value": tasks})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["value"].as_array().unwrap();
    let odd = json!({"value": [{"id": "odd", "commandLine": "x", "comandLine": "typo"}]});
    let r2 = c
        .call(Method::POST, "/jobs/j1/addtaskcollection", &[], Some(odd))
        .await;
    assert_eq!(r2.body["value"][0]["status"], "clienterror");
    assert_eq!(r2.body["value"][0]["error"]["code"], "UnsupportedProperty");
    assert_eq!(results.len(), 4);
    assert!(results[..3].iter().all(|t| t["status"] == "success"));
    assert_eq!(results[3]["status"], "clienterror");
    assert_eq!(results[3]["error"]["code"], "TaskExists");

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("x{i}"), "commandLine": "x"}))
        .collect();
    let r = c
        .call(
            Method::POST,
            "/jobs/j1/addtaskcollection",
            &[],
            Some(json!({"value": too_many})),
        )
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidPropertyValue"));

    let r = c.call(Method::GET, "/jobs/j1/tasks/t2", &[], None).await;
    assert_eq!((r.status, r.body["state"].as_str()), (200, Some("active")));
    let r = c.call(Method::GET, "/jobs/j1/tasks/zz", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "TaskNotFound"));

    // $filter, $select and paging through odata.nextLink.
    let r = c
        .call(
            Method::GET,
            "/jobs/j1/tasks",
            &[
                ("$filter", "state eq 'active' and id eq 't1'"),
                ("$select", "id,state"),
            ],
            None,
        )
        .await;
    assert_eq!(r.body["value"], json!([{"id": "t1", "state": "active"}]));
    let mut seen = Vec::new();
    let mut r = c
        .call(
            Method::GET,
            "/jobs/j1/tasks",
            &[("maxresults", "3"), ("$select", "id")],
            None,
        )
        .await;
    loop {
        for t in r.body["value"].as_array().unwrap() {
            seen.push(t["id"].as_str().unwrap().to_string());
        }
        let Some(next) = r.body["odata.nextLink"].as_str() else {
            break;
        };
        let url = reqwest::Url::parse(next).unwrap();
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let query: Vec<(&str, &str)> = pairs
            .iter()
            .filter(|(k, _)| k != "api-version")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        r = c.call(Method::GET, "/jobs/j1/tasks", &query, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    seen.sort();
    assert_eq!(seen, ["t0", "t1", "t2", "t3"]);
    let r = c
        .call(Method::GET, "/jobs", &[("$filter", "state gt 'x'")], None)
        .await;
    assert_eq!((r.status, r.code()), (400, "InvalidQueryParameterValue"));

    let r = c.call(Method::POST, "/jobs/j1/terminate", &[], None).await;
    assert_eq!(r.status, 202, "{}", r.body);
    let r = c
        .call(
            Method::GET,
            "/jobs",
            &[("$filter", "state eq 'completed'")],
            None,
        )
        .await;
    assert_eq!(r.body["value"].as_array().unwrap().len(), 1);
    let r = c.call(Method::POST, "/jobs/j1/terminate", &[], None).await;
    assert_eq!((r.status, r.code()), (409, "JobCompleted"));
    let r = c.call(Method::DELETE, "/jobs/j1", &[], None).await;
    assert_eq!(r.status, 202);
    let r = c.call(Method::GET, "/jobs/j1/tasks", &[], None).await;
    assert_eq!((r.status, r.code()), (404, "JobNotFound"));

    let r = c.call(Method::GET, "/nothing/here", &[], None).await;
    assert_eq!((r.status, r.code()), (400, "InvalidUri"));
}
