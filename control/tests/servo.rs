//! The servo protocol through the router (`tower::ServiceExt::oneshot`) on a SQLite store:
//! authentication, registration, assignment, the long-poll, health and refusal reports. The
//! same behaviour against a real process on both backends is in `tests-py/test_servo.py`.

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use control::assign::{self, AssignmentSettings};
use control::config::ServiceConfig;
use control::inventory::Inventory;
use control::model::{
    Attributes, HealthCheck, InstanceHealth, InstanceState, LbKey, Listener, LoadBalancer,
    Protocol, RegisteredInstance, Scheme, ZoneService,
};
use control::servo_api::secret_hash;
use control::store::Store;
use control::{AppState, app};
use elb_contract::wire::ConfigDocument;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    state: AppState,
}

const SECRET: &str = "0123456789abcdefghij0123456789abcdefghij";

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("control.db").display());
    let store = Store::open(&db).await.unwrap();
    for zone in ["za", "zb"] {
        store.add_zone(zone, "us-east-1").await.unwrap();
    }
    for (id, zone) in [("s1", "za"), ("s2", "za"), ("s3", "zb")] {
        store
            .create_servo(id, zone, &secret_hash(SECRET))
            .await
            .unwrap();
    }
    let state = AppState::new(
        ServiceConfig::default(),
        store.clone(),
        Inventory::BuiltIn(store.clone()),
    );
    Harness {
        _dir: dir,
        store,
        state,
    }
}

impl Harness {
    async fn call(
        &self,
        method: &str,
        path: &str,
        auth: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let body = body.map_or(Body::empty(), |b| Body::from(b.to_string()));
        let response = app(self.state.clone())
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn servo(
        &self,
        id: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let auth = format!("Bearer {id}:{SECRET}");
        self.call(method, path, Some(&auth), body).await
    }

    async fn register(&self, id: &str, zone: &str, public: &str) {
        let (status, doc) = self
            .servo(
                id,
                "POST",
                "/servo/v1/register",
                Some(json!({"ServoId": id, "Zone": zone, "PublicAddresses": [public], "PrivateAddresses": []})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        assert_eq!(doc, json!({"HeartbeatInterval": 2}));
    }

    async fn config(&self, id: &str, query: &str) -> ConfigDocument {
        let (status, doc) = self
            .servo(id, "GET", &format!("/servo/v1/config{query}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{doc}");
        serde_json::from_value(doc).expect("the document has exactly the servo's shape")
    }

    /// Servos s1 (zone a) and s3 (zone b) registered, load balancer `web` of a new account
    /// created and assigned; returns it with its servo-side name.
    async fn with_web(&self) -> (LoadBalancer, String) {
        self.register("s1", "za", "198.18.0.1").await;
        self.register("s3", "zb", "198.18.1.1").await;
        let (account, _) = self.store.create_account("test", false).await.unwrap();
        let web = load_balancer("web", &account.id);
        let servo_name = format!("web-{}", account.id);
        self.store.create_lb(&web, 20).await.unwrap();
        self.assign().await;
        (web, servo_name)
    }

    async fn assign(&self) {
        let settings = AssignmentSettings {
            servos_per_zone: 1,
            servo_timeout: Duration::from_secs(10),
        };
        assign::pass(&self.store, &settings, true).await.unwrap();
    }
}

fn load_balancer(name: &str, account_id: &str) -> LoadBalancer {
    let instance = |id: &str, zone: &str, address: &str| RegisteredInstance {
        instance_id: id.into(),
        address: address.into(),
        zone: zone.into(),
        health: InstanceHealth::registering(),
    };
    LoadBalancer {
        id: format!("lb-{name}"),
        key: LbKey {
            account_id: account_id.into(),
            region: "us-east-1".into(),
            name: name.into(),
        },
        dns_name: format!("{name}-{account_id}.lb.elb.local"),
        scheme: Scheme::InternetFacing,
        vpc_id: None,
        created_at: 1,
        listeners: vec![Listener::new(elb_contract::Listener {
            protocol: Protocol::Http,
            load_balancer_port: 80,
            instance_protocol: Protocol::Http,
            instance_port: 8080,
            ssl_certificate_id: None,
        })],
        zones: vec!["za".into(), "zb".into()],
        subnets: vec![],
        security_groups: vec![],
        instances: vec![
            instance("i-a", "za", "198.19.0.1"),
            instance("i-b", "zb", "198.19.1.1"),
        ],
        health_check: HealthCheck::default_for_port(std::num::NonZeroU16::new(8080).unwrap()),
        attributes: Attributes::default(),
        policies: vec![],
        backend_policies: vec![],
        tags: vec![],
    }
}

#[tokio::test]
async fn authentication() {
    let h = harness().await;
    let body = json!({"ServoId": "s1", "Zone": "za", "PublicAddresses": ["198.18.0.1"]});
    for auth in [
        None,
        Some("Bearer s1"),
        Some("Bearer s1:wrong"),
        Some("Basic czE6eA=="),
    ] {
        let (status, doc) = h
            .call("POST", "/servo/v1/register", auth, Some(body.clone()))
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}");
        assert!(doc["Error"].is_string());
    }
    let (status, _) = h
        .servo("s2", "POST", "/servo/v1/register", Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "s2 acting as s1");
    let (status, _) = h
        .servo(
            "s1",
            "POST",
            "/servo/v1/heartbeat",
            Some(json!({"ServoId": "s1"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "heartbeat before register");
    h.register("s1", "za", "198.18.0.1").await;
    let (status, doc) = h
        .servo(
            "s1",
            "POST",
            "/servo/v1/heartbeat",
            Some(json!({"ServoId": "s1"})),
        )
        .await;
    assert_eq!(
        (status, doc),
        (StatusCode::OK, json!({"HeartbeatInterval": 2}))
    );
}

#[tokio::test]
async fn assignment_long_poll_and_health() {
    let h = harness().await;
    let (web, servo_name) = h.with_web().await;

    let doc = h.config("s1", "").await;
    assert_eq!(doc.load_balancers.len(), 1);
    let lb = &doc.load_balancers[0];
    assert_eq!(lb.load_balancer_name, servo_name);
    assert_eq!(lb.vips, vec![std::net::Ipv4Addr::new(198, 18, 0, 1)]);
    let ids: Vec<(&str, bool)> = lb
        .instances
        .iter()
        .map(|i| (i.instance_id.as_str(), i.health_check))
        .collect();
    assert_eq!(
        ids,
        vec![("i-a", true), ("i-b", false)],
        "its own zone to check, the other zone's with their state (the zone rule needs it)"
    );
    assert!(h.config("s2", "").await.load_balancers.is_empty());

    // A long-poll at the current version waits, and a change wakes it at once.
    let version = doc.version;
    let state = h.state.clone();
    let waiter = tokio::spawn(async move {
        let request = Request::get(format!("/servo/v1/config?since={version}&wait=30"))
            .header("authorization", format!("Bearer s3:{SECRET}"))
            .body(Body::empty())
            .unwrap();
        let response = app(state).oneshot(request).await.unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            Instant::now(),
            serde_json::from_slice::<ConfigDocument>(&bytes).unwrap(),
        )
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "no change yet: the poll waits");

    // s1 reports its instance healthy (and, wrongly, zone b's): the state change makes a new
    // version, which wakes s3's poll; zone b's instance is left to s3.
    let changed = Instant::now();
    let (status, reply) = h
        .servo(
            "s1",
            "POST",
            "/servo/v1/health",
            Some(json!({"ServoId": "s1", "Instances": [
                {"LoadBalancerName": servo_name, "InstanceId": "i-a", "State": "InService", "ReasonCode": "N/A", "Description": "N/A"},
                {"LoadBalancerName": servo_name, "InstanceId": "i-b", "State": "InService", "ReasonCode": "N/A", "Description": "N/A"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply, json!({"Accepted": 1, "Ignored": 1}));
    let (woken_at, doc) = waiter.await.unwrap();
    assert!(woken_at.duration_since(changed) < Duration::from_secs(1));
    assert!(doc.version > version);
    assert!(
        doc.request_ids.is_empty(),
        "a servo report has no API request id"
    );

    let lb = h.store.get_lb(&web.key).await.unwrap().unwrap();
    let health = |id: &str| lb.instance(id).unwrap().health.state;
    assert_eq!(health("i-a"), InstanceState::InService);
    assert_eq!(health("i-b"), InstanceState::OutOfService);

    // Only reports the servo has no right to make: 403.
    let (status, _) = h
        .servo(
            "s3",
            "POST",
            "/servo/v1/health",
            Some(json!({"ServoId": "s3", "Instances": [
                {"LoadBalancerName": servo_name, "InstanceId": "i-a", "State": "OutOfService"}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn refusals_are_stored_shown_and_cleared() {
    let h = harness().await;
    let (web, servo_name) = h.with_web().await;
    let refuse = |refused: Value| json!({"ServoId": "s1", "Version": 5, "RequestIds": ["r-1"], "LoadBalancers": refused});
    let (status, reply) = h
        .servo(
            "s1",
            "POST",
            "/servo/v1/refusals",
            Some(refuse(json!([
                {"LoadBalancerName": servo_name, "Reason": "LoadBalancerPort 80 is reserved"},
                {"LoadBalancerName": "not-mine-123456789012", "Reason": "x"}
            ]))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{reply}");
    assert_eq!(reply, json!({"Accepted": 1, "Ignored": 1}));
    let listed = h.store.list_servos(10_000).await.unwrap();
    let s1 = listed.iter().find(|s| s.servo.id == "s1").unwrap();
    assert_eq!(s1.refused.len(), 1);
    assert_eq!(s1.refused[0].reason, "LoadBalancerPort 80 is reserved");
    // Zone a is refused, zone b served; DNS leaves the refusing servo out.
    let lb = h.store.get_lb(&web.key).await.unwrap().unwrap();
    let service = h
        .store
        .zone_services(std::slice::from_ref(&lb), 10_000)
        .await
        .unwrap();
    assert_eq!(
        service[0]["za"],
        ZoneService::Refused {
            servo: "s1".into(),
            reason: "LoadBalancerPort 80 is reserved".into()
        }
    );
    assert_eq!(service[0]["zb"], ZoneService::Serving);
    let health = lb.effective_health(lb.instance("i-a").unwrap(), &service[0]);
    assert_eq!(health.state, InstanceState::OutOfService);
    assert!(
        health.description.contains("s1") && health.description.ends_with("reserved"),
        "{}",
        health.description
    );
    match h.store.dns_lookup(&web.dns_name, 10_000).await.unwrap() {
        control::store::DnsLookup::Vips(v) => {
            assert_eq!(v, vec![std::net::Ipv4Addr::new(198, 18, 1, 1)])
        }
        other => panic!("{other:?}"),
    }
    // An empty report clears it.
    let (status, _) = h
        .servo("s1", "POST", "/servo/v1/refusals", Some(refuse(json!([]))))
        .await;
    assert_eq!(status, StatusCode::OK);
    let lb = h.store.get_lb(&web.key).await.unwrap().unwrap();
    let service = h.store.zone_services(&[lb], 10_000).await.unwrap();
    assert_eq!(service[0]["za"], ZoneService::Serving);
    // Another servo cannot report for s1.
    let (status, _) = h
        .servo("s3", "POST", "/servo/v1/refusals", Some(refuse(json!([]))))
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

/// A refusal report racing other writers on one SQLite file is never refused with a 500: its
/// transaction takes the write lock first (waiting on the busy timeout) instead of upgrading a
/// read snapshot, which SQLite fails at once when another writer committed in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusal_reports_race_other_writers() {
    let h = std::sync::Arc::new(harness().await);
    let (_, servo_name) = h.with_web().await;
    let reports = {
        let h = h.clone();
        tokio::spawn(async move {
            let mut failures = Vec::new();
            for i in 0..200 {
                let refused = if i % 2 == 0 {
                    json!([{"LoadBalancerName": servo_name, "Reason": format!("reason {i}")}])
                } else {
                    json!([])
                };
                let (status, reply) = h
                    .servo(
                        "s1",
                        "POST",
                        "/servo/v1/refusals",
                        Some(json!({"ServoId": "s1", "LoadBalancers": refused})),
                    )
                    .await;
                if status != StatusCode::OK {
                    failures.push(format!("report {i}: {status} {reply}"));
                }
            }
            failures
        })
    };
    let writers = {
        let h = h.clone();
        tokio::spawn(async move {
            for i in 0..200 {
                h.store
                    .create_account(&format!("racer-{i}"), false)
                    .await
                    .unwrap();
            }
        })
    };
    writers.await.unwrap();
    let failures = reports.await.unwrap();
    assert!(failures.is_empty(), "{failures:?}");
}
