//! The admin API through its router, without sockets.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body as AxumBody;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::*;
use crate::inventory::{Lease, LeaseState, Origin, Timestamp};
use crate::store::events::{EventKind, Retention, Source, Subject};

const TOKEN: &str = "test-token-0123456789abcdef";

struct Harness {
    _dir: tempfile::TempDir,
    state: ApiState,
}

fn harness() -> Harness {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut declared = crate::inventory::lab::lab();
    for n in declared.nodes.values_mut() {
        n.origin = Origin::Config;
    }
    declared.nodes.retain(|name, _| name.as_str() == "master-0");
    declared.reindex();
    let store = Store::open(dir.path(), declared).expect("store");
    let events = EventLog::open(&store, Retention::default()).expect("events");
    let metrics = Arc::new(Metrics::new(&store, &events));
    let readiness = Readiness::default();
    readiness.expect("admin", "127.0.0.1:9443".parse().expect("addr"));
    readiness.bound("admin", "127.0.0.1:9443".parse().expect("addr"));
    let clusters = crate::cluster::Clusters::new(&store, &events, Vec::new());
    let state = ApiState {
        clusters,
        store,
        events,
        keys: Arc::new(keys::Keys::single(Token::new(TOKEN).expect("token"))),
        backoff: Arc::default(),
        readiness,
        metrics,
        running: crate::api::reload::Running::default(),
        reloader: None,
        hypervisors: Vec::new(),
        shutdown: CancellationToken::new(),
    };
    Harness { _dir: dir, state }
}

impl Harness {
    async fn send(&self, method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.map_or_else(AxumBody::empty, |b| AxumBody::from(b.to_owned())))
            .expect("request");
        let response = router(self.state.clone()).oneshot(req).await.expect("infallible");
        let status = response.status();
        let bytes = response.into_body().collect().await.expect("body").to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value)
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let text = body.map(|b| b.to_string());
        self.send(method, uri, Some(TOKEN), text.as_deref()).await
    }
}

fn w0() -> Value {
    json!({"name": "w0", "cluster": "prod", "role": "worker", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.20", "labels": {"rack": "b"}})
}

/// Every method+path under `/api` the OpenAPI document (and so the router) has, with parameters
/// filled in.
fn every_api_route() -> Vec<(Method, String)> {
    let doc = serde_json::to_value(openapi()).expect("openapi json");
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths").iter().filter(|(p, _)| p.starts_with("/api/")) {
        for method in item.as_object().expect("item").keys() {
            let Ok(method) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            let concrete = path.replace("{name}", "w0").replace("{ip}", "10.1.107.100");
            out.push((method, concrete));
        }
    }
    out
}

#[tokio::test]
async fn every_api_route_refuses_a_missing_or_wrong_token() {
    let h = harness();
    let routes = every_api_route();
    assert!(routes.len() >= 20, "{routes:?}");
    for (method, path) in routes {
        assert!(path.starts_with("/api/"), "{path} is outside /api and would escape the token check");
        for token in [None, Some("wrong-token-0123456789abcdef"), Some("")] {
            let (status, body) = h.send(method.clone(), &path, token, Some("{}")).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path} with {token:?}");
            assert_eq!(body["error"], "unauthorized", "{method} {path}");
        }
    }
    let (status, _) = h.send(Method::GET, "/api/v2/unknown", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "unrouted /api paths need the token too");
    assert_eq!(h.state.store.snapshot().version, 0, "refused requests changed nothing");
}

/// Every operation the document has, called with the token, with names that exist and names
/// that do not, with an empty, a malformed and an oversized body where it takes one: every
/// answer's status is one the document lists for that operation, and every error is an
/// `ErrorBody`. What a client generated from the document expects is what the router does.
#[tokio::test]
async fn every_answer_the_router_gives_is_one_the_document_lists() {
    let h = harness();
    let doc = serde_json::to_value(openapi()).expect("openapi json");
    let oversized = "x".repeat(boot::MAX_IGNITION + 1);
    let mut undocumented = Vec::new();
    let mut calls = 0;
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
            let listed = operation["responses"].as_object().expect("responses");
            assert!(!path.starts_with("/api/") || listed.contains_key("401"), "{method} {path} lists no 401");
            let bodies: &[Option<&str>] = if operation.get("requestBody").is_some() {
                assert!(listed.contains_key("413"), "{method} {path} takes a body and lists no 413");
                &[Some("{}"), Some("{\"name\": 7}"), Some("not json"), Some(&oversized)]
            } else {
                &[None]
            };
            for name in ["master-0", "prod", "nope"] {
                let uri = path
                    .replace("{name}", name)
                    .replace("{ip}", "10.1.107.100")
                    .replace("{role}", "master")
                    .replace("{csr}", "csr-x");
                for body in bodies {
                    if matches!(method, Method::DELETE) && name != "nope" {
                        continue; // deleting what exists is covered by the CRUD tests
                    }
                    let (status, answer) = h.send(method.clone(), &uri, Some(TOKEN), *body).await;
                    calls += 1;
                    if !listed.contains_key(status.as_str()) {
                        undocumented.push(format!("{method} {uri} -> {status}"));
                    }
                    if !status.is_success() && path.starts_with("/api/") {
                        assert!(
                            answer["error"].is_string() && answer["message"].is_string(),
                            "{method} {uri} {status}: {answer}"
                        );
                    }
                }
            }
        }
    }
    assert!(calls > 100, "{calls} calls");
    assert!(undocumented.is_empty(), "answers the document does not list:\n{}", undocumented.join("\n"));
}

#[tokio::test]
async fn probes_answer_without_a_token() {
    let h = harness();
    let (status, body) = h.send(Method::GET, "/readyz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ready"], true);
    assert_eq!(h.send(Method::GET, "/healthz", None, None).await.0, StatusCode::OK);
    let (status, body) = h.send(Method::GET, "/metrics", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.as_str().expect("text").contains("slipway_inventory_objects{kind=\"node\"} 1"), "{body}");
}

#[tokio::test]
async fn readyz_fails_while_a_listener_is_unbound_or_after_shutdown() {
    let h = harness();
    h.state.readiness.expect("dns", "127.0.0.1:53".parse().expect("addr"));
    assert_eq!(h.send(Method::GET, "/readyz", None, None).await.0, StatusCode::SERVICE_UNAVAILABLE);
    h.state.readiness.bound("dns", "127.0.0.1:53".parse().expect("addr"));
    assert_eq!(h.send(Method::GET, "/readyz", None, None).await.0, StatusCode::OK);
    h.state.shutdown.cancel();
    assert_eq!(h.send(Method::GET, "/readyz", None, None).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn nodes_can_be_created_read_replaced_and_deleted() {
    let h = harness();
    let (status, body) = h.call(Method::POST, "/api/v1/nodes", Some(w0())).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["origin"], "api");
    let (status, body) = h.call(Method::GET, "/api/v1/nodes/w0", None).await;
    assert_eq!((status, body["mac"].as_str()), (StatusCode::OK, Some("52:54:00:00:00:20")));
    let (status, _) = h.call(Method::POST, "/api/v1/nodes", Some(w0())).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let mut moved = w0();
    moved["ipv4"] = json!("10.1.107.21");
    let (status, body) = h.call(Method::PUT, "/api/v1/nodes/w0", Some(moved)).await;
    assert_eq!((status, body["ipv4"].as_str()), (StatusCode::OK, Some("10.1.107.21")));
    assert_eq!(
        h.state.store.snapshot().node_by_ip("10.1.107.21".parse().expect("ip")).map(|n| n.name.to_string()),
        Some("w0".into())
    );
    let (_, list) = h.call(Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(list.as_array().map(Vec::len), Some(2));
    assert_eq!(h.call(Method::DELETE, "/api/v1/nodes/w0", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.call(Method::GET, "/api/v1/nodes/w0", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.call(Method::DELETE, "/api/v1/nodes/w0", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn put_creates_when_absent_and_refuses_a_name_mismatch() {
    let h = harness();
    assert_eq!(h.call(Method::PUT, "/api/v1/nodes/w0", Some(w0())).await.0, StatusCode::CREATED);
    let (status, body) = h.call(Method::PUT, "/api/v1/nodes/w1", Some(w0())).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("name")));
}

#[tokio::test]
async fn clusters_and_profiles_have_the_same_crud() {
    let h = harness();
    let cluster = json!({"name": "lab", "kind": "k3s", "base_domain": "lab.example", "network": "cluster",
        "api_address": "10.1.107.2", "api_int_address": "10.1.107.2", "ingress_address": "10.1.107.2"});
    assert_eq!(h.call(Method::POST, "/api/v1/clusters", Some(cluster)).await.0, StatusCode::CREATED);
    assert_eq!(h.call(Method::GET, "/api/v1/clusters/lab", None).await.1["kind"], "k3s");
    let profile = json!({"name": "debian", "kernel": "debian/vmlinuz", "initrds": ["debian/initrd.gz"], "args": ["console=ttyS0"], "config": "cloud-init"});
    assert_eq!(h.call(Method::POST, "/api/v1/profiles", Some(profile)).await.0, StatusCode::CREATED);
    let mut node = w0();
    node["cluster"] = json!("lab");
    node["profile"] = json!("debian");
    assert_eq!(h.call(Method::POST, "/api/v1/nodes", Some(node)).await.0, StatusCode::CREATED);
    let (status, body) = h.call(Method::DELETE, "/api/v1/profiles/debian", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "a profile in use cannot go: {body}");
    assert_eq!(h.call(Method::DELETE, "/api/v1/nodes/w0", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.call(Method::DELETE, "/api/v1/profiles/debian", None).await.0, StatusCode::NO_CONTENT);
    assert_eq!(h.call(Method::DELETE, "/api/v1/clusters/lab", None).await.0, StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn networks_are_read_only() {
    let h = harness();
    let (status, body) = h.call(Method::GET, "/api/v1/networks", None).await;
    assert_eq!((status, body[0]["cidr"].as_str()), (StatusCode::OK, Some("10.1.107.0/24")));
    assert_eq!(h.call(Method::GET, "/api/v1/networks/cluster", None).await.1["lease_time"], "1h");
    assert_eq!(
        h.call(Method::PUT, "/api/v1/networks/cluster", Some(json!({}))).await.0,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

#[tokio::test]
async fn config_declared_objects_cannot_be_changed_through_the_api() {
    let h = harness();
    let (status, body) = h.call(Method::DELETE, "/api/v1/nodes/master-0", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["message"].as_str().expect("message").contains("config file"), "{body}");
}

#[tokio::test]
async fn malformed_json_gets_400_naming_the_field_and_changes_nothing() {
    let h = harness();
    let cases: [(&str, Option<&str>); 5] = [
        (r#"{"name": "w0", "mac": "52:54:00:00:00:20""#, None),
        (r#"{"name": "w0", "mac": "zz:54:00:00:00:20", "ipv4": "10.1.107.20"}"#, Some("mac")),
        (r#"{"name": "w0", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.300"}"#, Some("ipv4")),
        (r#"{"name": "W 0", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.20"}"#, Some("name")),
        (r#"{"name": "w0", "mac": "52:54:00:00:00:20", "ipv4": "10.1.107.20", "colour": "red"}"#, None),
    ];
    for (body, field) in cases {
        let (status, answer) = h.send(Method::POST, "/api/v1/nodes", Some(TOKEN), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request");
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{answer}");
            assert!(answer["message"].as_str().expect("message").starts_with(field), "{answer}");
        }
    }
    let (_, answer) = h.send(Method::POST, "/api/v1/nodes", Some(TOKEN), Some(cases[4].0)).await;
    assert!(answer["message"].as_str().expect("message").contains("colour"), "{answer}");
    let (_, answer) = h.send(Method::POST, "/api/v1/nodes", Some(TOKEN), Some(r#"{"name": "w0"}"#)).await;
    assert!(answer["message"].as_str().expect("message").contains("missing field `mac`"), "{answer}");
    assert_eq!(h.state.store.snapshot().version, 0);
}

#[tokio::test]
async fn invalid_objects_get_422_naming_every_problem_and_change_nothing() {
    let h = harness();
    let bad = json!({"name": "w0", "cluster": "nope", "mac": "52:54:00:00:00:02", "ipv4": "10.1.107.150"});
    let (status, body) = h.call(Method::POST, "/api/v1/nodes", Some(bad)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"], "invalid");
    let fields: Vec<&str> =
        body["problems"].as_array().expect("problems").iter().filter_map(|p| p["field"].as_str()).collect();
    assert!(fields.contains(&"cluster") && fields.contains(&"mac"), "{body}");
    assert_eq!(h.state.store.snapshot().version, 0);
    assert!(h.call(Method::GET, "/api/v1/nodes/w0", None).await.0 == StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn apply_is_all_or_nothing() {
    let h = harness();
    let good = json!({"nodes": [w0()]});
    let (status, body) = h.call(Method::POST, "/api/v1/apply", Some(good.clone())).await;
    assert_eq!((status, body[0]["action"].as_str()), (StatusCode::OK, Some("created")));
    assert_eq!(h.call(Method::POST, "/api/v1/apply", Some(good)).await.1[0]["action"], "unchanged");
    let mut clash = w0();
    clash["name"] = json!("w1");
    let mut fine = w0();
    fine["name"] = json!("w2");
    fine["mac"] = json!("52:54:00:00:00:22");
    fine["ipv4"] = json!("10.1.107.22");
    let (status, _) = h.call(Method::POST, "/api/v1/apply", Some(json!({"nodes": [fine, clash]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(h.call(Method::GET, "/api/v1/nodes/w2", None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn leases_are_listed_with_their_node_and_released() {
    let h = harness();
    let now = Timestamp::now();
    let lease = Lease {
        ip: "10.1.107.11".parse().expect("ip"),
        mac: "52:54:00:00:00:02".parse().expect("mac"),
        network: "cluster".parse().expect("name"),
        state: LeaseState::Bound,
        expires: Timestamp(now.0 + Duration::from_secs(3600)),
        updated: now,
        hostname: None,
        client_id: None,
    };
    h.state.store.put_leases(vec![lease]).expect("put");
    let (status, body) = h.call(Method::GET, "/api/v1/leases", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (body[0]["node"].as_str(), body[0]["active"].as_bool(), body[0]["state"].as_str()),
        (Some("master-0"), Some(true), Some("bound"))
    );
    let (status, body) = h.call(Method::DELETE, "/api/v1/leases/10.1.107.11", None).await;
    assert_eq!((status, body["state"].as_str()), (StatusCode::OK, Some("released")));
    assert_eq!(h.call(Method::GET, "/api/v1/leases", None).await.1[0]["active"], false);
    assert_eq!(h.call(Method::DELETE, "/api/v1/leases/10.1.107.12", None).await.0, StatusCode::NOT_FOUND);
    assert_eq!(h.call(Method::DELETE, "/api/v1/leases/not-an-ip", None).await.1["field"], "ip");
}

#[tokio::test]
async fn events_are_filtered_and_bad_filters_name_the_parameter() {
    let h = harness();
    assert_eq!(h.call(Method::POST, "/api/v1/nodes", Some(w0())).await.0, StatusCode::CREATED);
    h.state.events.append(
        Source::Dhcp,
        Subject::default(),
        EventKind::PoolExhausted { network: "cluster".parse().expect("name") },
    );
    h.state.events.flush().await;
    let (_, all) = h.call(Method::GET, "/api/v1/events", None).await;
    assert_eq!(all.as_array().map(Vec::len), Some(2), "{all}");
    let (_, mine) = h.call(Method::GET, "/api/v1/events?node=w0&type=inventory_changed", None).await;
    assert_eq!(mine.as_array().map(Vec::len), Some(1), "{mine}");
    assert_eq!(mine[0]["details"]["action"], "created");
    let (_, dhcp) = h.call(Method::GET, "/api/v1/events?source=dhcp&since=10m", None).await;
    assert_eq!(dhcp[0]["details"]["type"], "pool_exhausted");
    for (query, field) in [
        ("limit=0", "limit"),
        ("mac=zz", "mac"),
        ("since=yesterday", "since"),
        ("source=moon", "source"),
        ("follow=maybe", "follow"),
        ("after=-1", "after"),
    ] {
        let (status, body) = h.call(Method::GET, &format!("/api/v1/events?{query}"), None).await;
        assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some(field)), "{query}: {body}");
    }
    let (status, body) = h.call(Method::GET, "/api/v1/events?colour=red", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body["message"].as_str().expect("message").contains("colour"), "{body}");
}

#[tokio::test]
async fn follow_streams_an_event_appended_after_subscribing() {
    let h = harness();
    let req = Request::builder()
        .uri("/api/v1/events?follow=true&type=pool_exhausted")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(AxumBody::empty())
        .expect("request");
    let response = router(h.state.clone()).oneshot(req).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/event-stream");
    let mut body = response.into_body();
    // The stream is subscribed once the response exists; append after that.
    h.state.events.append(Source::Dhcp, Subject::default(), EventKind::DaemonStopping);
    h.state.events.append(
        Source::Dhcp,
        Subject::default(),
        EventKind::PoolExhausted { network: "cluster".parse().expect("name") },
    );
    let mut text = String::new();
    let read = async {
        while !text.contains("\n\n") {
            match body.frame().await {
                Some(Ok(frame)) => text.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap_or_default())),
                _ => break,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an event within 10 s");
    assert!(text.contains("event: pool_exhausted"), "{text}");
    assert!(text.contains("\"network\":\"cluster\""), "{text}");
    assert!(!text.contains("daemon_stopping"), "filtered out: {text}");
    h.state.shutdown.cancel();
    let ended =
        tokio::time::timeout(Duration::from_secs(10), async { while let Some(Ok(_)) = body.frame().await {} }).await;
    assert!(ended.is_ok(), "the stream ends on shutdown");
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let h = harness();
    let (status, doc) = h.call(Method::GET, "/api/v1/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().expect("version").starts_with("3."), "{doc}");
    for path in ["/api/v1/nodes", "/api/v1/nodes/{name}", "/api/v1/leases/{ip}", "/api/v1/events", "/api/v1/apply"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"].get("Node").is_some());
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    // OpenAPI requires a description on every response (openapi-spec-validator refused them).
    let mut missing = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for (code, response) in operation["responses"].as_object().into_iter().flatten() {
                if !response["description"].is_string() {
                    missing.push(format!("{method} {path} {code}"));
                }
            }
        }
    }
    assert!(missing.is_empty(), "responses without a description: {missing:?}");
    // A success with a body says what the body is (a generated client parses it).
    let mut shapeless = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for (code, response) in operation["responses"].as_object().into_iter().flatten() {
                if code.starts_with('2') && code != "204" && response.get("content").is_none() {
                    shapeless.push(format!("{method} {path} {code}"));
                }
            }
        }
    }
    assert!(shapeless.is_empty(), "successes with no content described: {shapeless:?}");
    // Operation ids are unique (client generators name methods by them).
    let mut ids: Vec<&str> = doc["paths"]
        .as_object()
        .expect("paths")
        .values()
        .flat_map(|item| item.as_object().into_iter().flatten().filter_map(|(_, op)| op["operationId"].as_str()))
        .collect();
    let all = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), all, "operation ids are unique: {ids:?}");
    // A path parameter is in its path; query parameters are declared as such.
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            for p in operation["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap_or_default();
                if p["in"] == "path" {
                    assert!(path.contains(&format!("{{{name}}}")), "{method} {path}: path parameter {name}");
                }
            }
        }
    }
    assert_eq!(doc["paths"]["/api/v1/events"]["get"]["parameters"][0]["in"], "query");
    assert_eq!(doc["paths"]["/api/v1/apply"]["post"]["responses"]["200"]["description"], "OK");
}

#[tokio::test]
async fn inventory_changes_are_recorded_as_events() {
    let h = harness();
    h.call(Method::POST, "/api/v1/nodes", Some(w0())).await;
    h.call(Method::DELETE, "/api/v1/nodes/w0", None).await;
    h.state.events.flush().await;
    let (_, events) = h.call(Method::GET, "/api/v1/events?node=w0", None).await;
    let actions: Vec<&str> =
        events.as_array().expect("list").iter().filter_map(|e| e["details"]["action"].as_str()).collect();
    assert_eq!(actions, ["created", "deleted"]);
    assert_eq!(events[0]["mac"], "52:54:00:00:00:20");
}

#[tokio::test]
async fn a_wrong_method_gets_405_with_the_json_error_shape() {
    let h = harness();
    let req = Request::builder()
        .method(Method::PATCH)
        .uri("/api/v1/nodes")
        .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(AxumBody::empty())
        .expect("request");
    let response = router(h.state.clone()).oneshot(req).await.expect("infallible");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers().get(header::ALLOW).map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = response.into_body().collect().await.expect("body").to_bytes();
    let body: Value = serde_json::from_slice(&bytes).expect("a JSON body");
    assert_eq!(body["error"], "method_not_allowed", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("PATCH") && m.contains("/api/v1/nodes")), "{body}");
    let allow = allow.expect("an Allow header");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
}

#[tokio::test]
async fn apply_takes_yaml_when_the_content_type_says_so_and_names_the_body_otherwise() {
    let h = harness();
    let yaml = "nodes:\n  - name: w0\n    cluster: prod\n    role: worker\n    mac: 52:54:00:00:00:20\n    ipv4: 10.1.107.20\n";
    let send = |content_type: &'static str, body: &'static str| {
        let req = Request::builder()
            .method(Method::POST)
            .uri("/api/v1/apply")
            .header(header::AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(header::CONTENT_TYPE, content_type)
            .body(AxumBody::from(body))
            .expect("request");
        let router = router(h.state.clone());
        async move {
            let response = router.oneshot(req).await.expect("infallible");
            let status = response.status();
            let bytes = response.into_body().collect().await.expect("body").to_bytes();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null))
        }
    };
    let (status, body) = send("application/json", yaml).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "body", "{body}");
    assert!(body["message"].as_str().is_some_and(|m| m.contains("application/yaml")), "{body}");
    let (status, body) = send("application/yaml", "nodes:\n  - name: w1\n    mac: zz\n").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["field"], "nodes[0].mac", "{body}");
    let (status, body) = send("application/yaml", yaml).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(h.state.store.snapshot().nodes.contains_key("w0"));
}

#[tokio::test]
async fn a_clash_names_the_object_in_the_request_not_the_one_it_meets() {
    let h = harness();
    let existing = h.state.store.snapshot().nodes.values().next().cloned().expect("a node");
    // "a0" sorts before the node it clashes with: the request's node is still the one named.
    let body = json!({"name": "a0", "mac": existing.mac.to_string(), "ipv4": "10.1.107.77"});
    let (status, body) = h.call(Method::POST, "/api/v1/nodes", Some(body)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["problems"][0]["name"], "a0", "{body}");
    assert_eq!(body["problems"][0]["field"], "mac", "{body}");
    assert!(body["problems"][0]["message"].as_str().is_some_and(|m| m.contains(existing.name.as_str())), "{body}");
}

/// utoipa names a schema after its type, and a second type of the same name silently takes the
/// first one's place in the document (the plan's `Action` once stood for the inventory's, and a
/// generated client refused `create`). Every type that derives `ToSchema` has a name of its own,
/// or its own `#[schema(as = ...)]`.
#[test]
fn every_schema_in_the_document_has_a_name_of_its_own() {
    fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    rust_files(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut seen: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut pending: Option<Option<String>> = None; // a ToSchema derive seen; its `as` name
        for line in text.lines().map(str::trim) {
            if line.starts_with("#[derive(") && line.contains("ToSchema") {
                pending = Some(None);
            } else if let Some(alias) = line.strip_prefix("#[schema(as = ").and_then(|r| r.strip_suffix(")]")) {
                if let Some(p) = pending.as_mut() {
                    *p = Some(alias.to_owned());
                }
            } else if let Some(rest) = line.strip_prefix("pub struct ").or_else(|| line.strip_prefix("pub enum ")) {
                if let Some(alias) = pending.take() {
                    let name = rest.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or_default();
                    seen.entry(alias.unwrap_or_else(|| name.to_owned())).or_default().push(file.display().to_string());
                }
            } else if !line.starts_with("#[") && !line.starts_with("///") && !line.is_empty() {
                pending = None;
            }
        }
    }
    let clashes: Vec<_> = seen.iter().filter(|(_, files)| files.len() > 1).collect();
    assert!(seen.len() > 40, "the scan found only {} schemas", seen.len());
    assert!(clashes.is_empty(), "schema names used by more than one type: {clashes:?}");
}

#[tokio::test]
async fn the_status_page_is_served_without_a_token_under_a_strict_policy() {
    let h = harness();
    for (path, kind) in [("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")] {
        let req = Request::builder().uri(path).body(AxumBody::empty()).expect("request");
        let response = router(h.state.clone()).oneshot(req).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        let headers = response.headers();
        let content_type = headers[header::CONTENT_TYPE].to_str().expect("ascii");
        assert!(content_type.starts_with(kind), "{path}: {content_type}");
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().expect("ascii");
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "{csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let text = response.into_body().collect().await.expect("body").to_bytes();
        assert!(!text.is_empty(), "{path}");
    }
    // The page holds no data: what it shows comes from /api, which still wants the token.
    let (status, _) = h.send(Method::GET, "/api/v1/nodes", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for path in ["/", "/ui"] {
        let req = Request::builder().uri(path).body(AxumBody::empty()).expect("request");
        let response = router(h.state.clone()).oneshot(req).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::SEE_OTHER, "{path}");
        assert_eq!(response.headers()[header::LOCATION], "/ui/");
    }
}

#[test]
fn the_status_page_has_no_inline_code_and_loads_nothing_from_elsewhere() {
    let index = include_str!("page/index.html");
    // CSP forbids inline script and style: each would be a page that silently does nothing.
    assert!(!index.contains("<script>") && !index.contains("style="), "inline code in index.html");
    assert!(!index.contains("onclick") && !index.contains("onsubmit"), "inline handlers in index.html");
    for file in [index, include_str!("page/app.js"), include_str!("page/style.css")] {
        assert!(!file.contains("http://") && !file.contains("https://") && !file.contains("//cdn"), "remote reference");
    }
    // Values from the API are set as text, never parsed as HTML.
    assert!(!include_str!("page/app.js").contains("innerHTML"));
}

#[tokio::test]
async fn every_write_is_in_the_audit_trail_and_only_there() {
    let h = harness();
    assert_eq!(h.call(Method::POST, "/api/v1/nodes", Some(w0())).await.0, StatusCode::CREATED);
    assert_eq!(h.call(Method::GET, "/api/v1/nodes", None).await.0, StatusCode::OK);
    assert_eq!(h.call(Method::DELETE, "/api/v1/nodes/nope", None).await.0, StatusCode::NOT_FOUND);
    let (status, _) = h.send(Method::PUT, "/api/v1/nodes/w0", Some("not-the-token-0123456789"), Some("{}")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    h.state.events.flush().await;
    let (_, audit) = h.call(Method::GET, "/api/v1/events?kind=audit", None).await;
    let rows: Vec<(String, String, u64, String, String)> = audit
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let d = &e["details"];
            assert_eq!(d["type"], "audit");
            (
                d["method"].as_str().unwrap_or_default().into(),
                d["object"].as_str().unwrap_or_default().into(),
                d["status"].as_u64().unwrap_or_default(),
                d["outcome"].as_str().unwrap_or_default().into(),
                d["token"].as_str().unwrap_or_default().into(),
            )
        })
        .collect();
    let want = [
        ("POST", "nodes", 201, "done", "admin"),
        ("DELETE", "nodes/nope", 404, "refused", "admin"),
        ("PUT", "nodes/w0", 401, "unauthenticated", "none"),
    ];
    assert_eq!(rows, want.map(|(m, o, s, out, t)| (m.to_owned(), o.to_owned(), s, out.to_owned(), t.to_owned())));
    // Reads are not audited; the audit trail is not in the event log, nor the events in it.
    let (_, events) = h.call(Method::GET, "/api/v1/events", None).await;
    assert!(events.as_array().expect("events").iter().all(|e| e["details"]["type"] != "audit"), "{events}");
    assert!(events.as_array().expect("events").iter().any(|e| e["details"]["type"] == "inventory_changed"));
    let (status, body) = h.call(Method::GET, "/api/v1/events?kind=boot", None).await;
    assert_eq!((status, body["field"].as_str()), (StatusCode::BAD_REQUEST, Some("kind")), "{body}");
    // The token itself is in no event.
    assert!(!audit.to_string().contains(TOKEN) && !audit.to_string().contains("not-the-token"));
}
