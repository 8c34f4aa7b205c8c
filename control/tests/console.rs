//! The web console's endpoints through the router (`tower::ServiceExt::oneshot`) on a SQLite
//! store: sign-in, sessions (forged, expired, idle, signed out), CSRF and origin checks, IAM
//! policies applied to console actions, the metrics history fed from servo heartbeats, the
//! administrators' overview, and the static page. The browser test is `tests/tests/console.rs`.

use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use control::assign::{self, AssignmentSettings};
use control::config::ServiceConfig;
use control::console::{metrics, session};
use control::inventory::Inventory;
use control::servo_api::secret_hash;
use control::store::{InventoryInstance, Store};
use control::{AppState, app, timefmt};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const HOST: &str = "control.test:8773";
const ORIGIN: &str = "http://control.test:8773";
const SERVO_SECRET: &str = "0123456789abcdefghij0123456789abcdefghij";

struct Harness {
    dir: tempfile::TempDir,
    store: Store,
    state: AppState,
    key_id: String,
    secret: String,
    account_id: String,
}

/// A response: status, headers, body text.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn error_code(&self) -> String {
        self.json()["Error"]["Code"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A signed-in browser: its cookie and CSRF token.
#[derive(Clone, Debug)]
struct Browser {
    token: String,
    csrf: String,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("control.db").display());
    let store = Store::open(&db).await.unwrap();
    store.add_zone("us-east-1a", "us-east-1").await.unwrap();
    // A live servo in the zone: control creates load balancers only where one can serve them.
    store
        .create_servo("s1", "us-east-1a", &secret_hash(SERVO_SECRET))
        .await
        .unwrap();
    store
        .register_servo("s1", &["198.18.0.11".parse().unwrap()], &[], None, 10_000)
        .await
        .unwrap();
    let (account, key) = store.create_account("test", false).await.unwrap();
    let state = AppState::new(
        ServiceConfig::default(),
        store.clone(),
        Inventory::BuiltIn(store.clone()),
    );
    Harness {
        dir,
        store,
        state,
        key_id: key.id,
        secret: key.secret,
        account_id: account.id,
    }
}

fn query_form(action: &str, rest: &str) -> String {
    let mut f = format!("Action={action}&Version=2012-06-01");
    if !rest.is_empty() {
        f.push('&');
        f.push_str(rest);
    }
    f
}

impl Harness {
    async fn send(&self, request: Request<Body>) -> Reply {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    async fn sign_in_as(&self, key_id: &str, secret: &str) -> Reply {
        let body = json!({"AccessKeyId": key_id, "SecretAccessKey": secret}).to_string();
        self.send(
            Request::post("/console/api/session")
                .header("host", HOST)
                .header("origin", ORIGIN)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
    }

    async fn sign_in(&self) -> Browser {
        let reply = self.sign_in_as(&self.key_id, &self.secret).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
        browser_of(&reply)
    }

    /// A console request with the browser's cookie; `csrf` adds its token.
    async fn console(
        &self,
        browser: &Browser,
        method: &str,
        path: &str,
        body: Option<String>,
        csrf: bool,
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", HOST)
            .header(
                "cookie",
                format!("theme=dark; {}={}", session::COOKIE, browser.token),
            );
        if method != "GET" {
            req = req.header("origin", ORIGIN);
        }
        if csrf {
            req = req.header("x-csrf-token", &browser.csrf);
        }
        if body.is_some() {
            req = req.header("content-type", "application/x-www-form-urlencoded");
        }
        self.send(req.body(body.map_or(Body::empty(), Body::from)).unwrap())
            .await
    }

    async fn query(&self, browser: &Browser, action: &str, rest: &str) -> Reply {
        self.console(
            browser,
            "POST",
            "/console/api/query",
            Some(query_form(action, rest)),
            true,
        )
        .await
    }
}

fn browser_of(reply: &Reply) -> Browser {
    let cookie = reply
        .headers
        .get(header::SET_COOKIE)
        .expect("a session cookie")
        .to_str()
        .unwrap()
        .to_string();
    let token = cookie
        .split(';')
        .next()
        .and_then(|kv| kv.split_once('='))
        .map(|(_, v)| v.to_string())
        .unwrap();
    Browser {
        token,
        csrf: reply.json()["CsrfToken"].as_str().unwrap().to_string(),
    }
}

const CREATE: &str = "LoadBalancerName=web&AvailabilityZones.member.1=us-east-1a\
    &Listeners.member.1.Protocol=HTTP&Listeners.member.1.LoadBalancerPort=80\
    &Listeners.member.1.InstancePort=8080";

#[tokio::test]
async fn sign_in_issues_a_hashed_http_only_session_and_acts_as_the_user() {
    let h = harness().await;
    let reply = h.sign_in_as(&h.key_id, &h.secret).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let cookie = reply.headers[header::SET_COOKIE].to_str().unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
        assert!(cookie.contains(attr), "{attr} missing from {cookie}");
    }
    assert!(!cookie.contains(&h.secret) && !reply.body.contains(&h.secret));
    let view = reply.json();
    assert_eq!(view["AccountId"], h.account_id);
    assert_eq!(view["UserName"], "root");
    assert_eq!(view["Region"], "us-east-1");
    assert_eq!(view["Zones"], json!(["us-east-1a"]));
    assert_eq!(view["Admin"], false);
    let browser = browser_of(&reply);
    assert_eq!(browser.csrf, session::csrf_token(&browser.token));

    let again = h
        .console(&browser, "GET", "/console/api/session", None, false)
        .await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["CsrfToken"], browser.csrf.as_str());
    assert_eq!(again.headers["cache-control"], "no-store");

    // Actions run through the Query API: the same XML, the same RequestId header.
    let created = h.query(&browser, "CreateLoadBalancer", CREATE).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.body);
    assert!(created.headers.contains_key("x-amzn-requestid"));
    assert!(created.body.contains(&format!(
        "<DNSName>web-{}.lb.elb.local</DNSName>",
        h.account_id
    )));
    let described = h.query(&browser, "DescribeLoadBalancers", "").await;
    assert!(
        described
            .body
            .contains("<LoadBalancerName>web</LoadBalancerName>")
    );
    // API errors come back as the API's ErrorResponse, message included.
    let dup = h.query(&browser, "CreateLoadBalancer", CREATE).await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST);
    assert!(dup.body.contains("<Code>DuplicateLoadBalancerName</Code>"));
    assert!(
        dup.body
            .contains("The specified load balancer name already exists")
    );

    // The database holds the token's hash, never the token (nor the CSRF token).
    h.store.close().await;
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(h.dir.path()).unwrap() {
        // SQLite may remove its -wal/-shm files between the listing and the read.
        match std::fs::read(entry.unwrap().path()) {
            Ok(bytes) => stored.extend(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("reading the database directory: {e}"),
        }
    }
    let stored = String::from_utf8_lossy(&stored);
    assert!(stored.contains(&session::token_hash(&browser.token)));
    assert!(!stored.contains(&browser.token));
    assert!(!stored.contains(&browser.csrf));
}

#[tokio::test]
async fn bad_secrets_and_unknown_keys_are_refused_alike() {
    let h = harness().await;
    let wrong = h.sign_in_as(&h.key_id, "not-the-secret").await;
    let unknown = h.sign_in_as("AKIANOTAKEY00000000", &h.secret).await;
    for reply in [&wrong, &unknown] {
        assert_eq!(reply.status, StatusCode::FORBIDDEN);
        assert_eq!(reply.error_code(), "InvalidClientTokenId");
        assert!(!reply.headers.contains_key(header::SET_COOKIE));
    }
    assert_eq!(
        wrong.body, unknown.body,
        "nothing tells which part was wrong"
    );

    // Not JSON (what a cross-site form would send): refused before looking at credentials.
    let form = h
        .send(
            Request::post("/console/api/session")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(Body::from(format!(
                    "AccessKeyId={}&SecretAccessKey={}",
                    h.key_id, h.secret
                )))
                .unwrap(),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A script on another site.
    let cross = h
        .send(
            Request::post("/console/api/session")
                .header("host", HOST)
                .header("origin", "http://evil.example")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"AccessKeyId": h.key_id, "SecretAccessKey": h.secret}).to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(cross.error_code(), "CrossSiteRequest");
    // A region this endpoint does not serve.
    let region = h
        .send(
            Request::post("/console/api/session")
                .header("content-type", "application/json")
                .body(Body::from(
                    json!({"AccessKeyId": h.key_id, "SecretAccessKey": h.secret, "Region": "eu-west-9"})
                        .to_string(),
                ))
                .unwrap(),
        )
        .await;
    assert_eq!(region.status, StatusCode::BAD_REQUEST);
    assert!(region.body.contains("us-east-1"), "{}", region.body);
}

#[tokio::test]
async fn forged_expired_and_idle_sessions_are_refused() {
    let h = harness().await;
    let forged = Browser {
        token: session::new_token(),
        csrf: String::new(),
    };
    for path in [
        "/console/api/session",
        "/console/api/metrics?LoadBalancerName=web",
        "/console/api/admin",
    ] {
        let r = h.console(&forged, "GET", path, None, false).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(r.error_code(), "NotSignedIn");
    }
    let forged = Browser {
        csrf: session::csrf_token(&forged.token),
        ..forged
    };
    let r = h.query(&forged, "DescribeLoadBalancers", "").await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // No cookie at all.
    let r = h
        .send(
            Request::post("/console/api/query")
                .body(Body::from(query_form("DescribeLoadBalancers", "")))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let now = timefmt::now_millis();
    let hour = 3_600_000;
    // Signed in 9 hours ago and busy all along: past the absolute limit.
    let old = session::new_token();
    let mut stored = session::create(&h.store, &old, &h.key_id, "us-east-1", now - 9 * hour)
        .await
        .unwrap();
    session::touch(&h.store, &mut stored, now - 60_000)
        .await
        .unwrap();
    // Signed in 2 hours ago, idle since.
    let idle = session::new_token();
    session::create(&h.store, &idle, &h.key_id, "us-east-1", now - 2 * hour)
        .await
        .unwrap();
    // Signed in 30 minutes ago: fine.
    let fresh = session::new_token();
    session::create(&h.store, &fresh, &h.key_id, "us-east-1", now - hour / 2)
        .await
        .unwrap();
    for (token, status) in [
        (&old, StatusCode::UNAUTHORIZED),
        (&idle, StatusCode::UNAUTHORIZED),
        (&fresh, StatusCode::OK),
    ] {
        let b = Browser {
            token: token.clone(),
            csrf: session::csrf_token(token),
        };
        let r = h.query(&b, "DescribeLoadBalancers", "").await;
        assert_eq!(r.status, status, "{}", r.body);
        if status == StatusCode::UNAUTHORIZED {
            assert!(r.body.contains("expired"), "{}", r.body);
            // Refused once, gone for good.
            assert!(session::find(&h.store, token).await.unwrap().is_none());
        }
    }
    // Using the fresh session moved its idle deadline.
    let touched = session::find(&h.store, &fresh).await.unwrap().unwrap();
    assert!(touched.last_seen >= now);
}

#[tokio::test]
async fn state_changing_requests_need_the_csrf_token_and_our_origin() {
    let h = harness().await;
    let browser = h.sign_in().await;
    let create = || Some(query_form("CreateLoadBalancer", CREATE));

    let missing = h
        .console(&browser, "POST", "/console/api/query", create(), false)
        .await;
    assert_eq!(missing.status, StatusCode::FORBIDDEN);
    assert_eq!(missing.error_code(), "InvalidCsrfToken");

    let stolen_cookie_only = Browser {
        csrf: session::csrf_token(&session::new_token()),
        ..browser.clone()
    };
    let wrong = h
        .console(
            &stolen_cookie_only,
            "POST",
            "/console/api/query",
            create(),
            true,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN);
    assert_eq!(wrong.error_code(), "InvalidCsrfToken");

    // Right token, wrong site.
    let cross = h
        .send(
            Request::post("/console/api/query")
                .header("host", HOST)
                .header("origin", "http://evil.example")
                .header("cookie", format!("{}={}", session::COOKIE, browser.token))
                .header("x-csrf-token", &browser.csrf)
                .body(Body::from(query_form("CreateLoadBalancer", CREATE)))
                .unwrap(),
        )
        .await;
    assert_eq!(cross.status, StatusCode::FORBIDDEN);
    assert_eq!(cross.error_code(), "CrossSiteRequest");

    // None of them created anything.
    let described = h.query(&browser, "DescribeLoadBalancers", "").await;
    assert_eq!(described.status, StatusCode::OK);
    assert!(!described.body.contains("<LoadBalancerName>web"));

    // Sign-out is state-changing too.
    let out = h
        .console(&browser, "DELETE", "/console/api/session", None, false)
        .await;
    assert_eq!(out.status, StatusCode::FORBIDDEN);
    let still = h
        .console(&browser, "GET", "/console/api/session", None, false)
        .await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn sign_out_ends_the_session() {
    let h = harness().await;
    let browser = h.sign_in().await;
    let other = h.sign_in().await;
    let out = h
        .console(&browser, "DELETE", "/console/api/session", None, true)
        .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    let cleared = out.headers[header::SET_COOKIE].to_str().unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    let after = h.query(&browser, "DescribeLoadBalancers", "").await;
    assert_eq!(after.status, StatusCode::UNAUTHORIZED);
    // Another browser's session of the same key is not affected.
    let r = h.query(&other, "DescribeLoadBalancers", "").await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn iam_policies_apply_to_console_actions() {
    let h = harness().await;
    let root = h.sign_in().await;
    assert_eq!(
        h.query(&root, "CreateLoadBalancer", CREATE).await.status,
        StatusCode::OK
    );
    let (_, key) = h.store.create_user(&h.account_id, "viewer").await.unwrap();
    control::admin::policy_put(
        &h.store,
        &h.account_id,
        "viewer",
        "read-only",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Allow","Action":"elasticloadbalancing:*","Resource":"*"},
            {"Effect":"Deny","Action":["elasticloadbalancing:Create*","elasticloadbalancing:Delete*"],"Resource":"*"}]}"#,
    )
    .await
    .unwrap();
    let signed_in = h.sign_in_as(&key.id, &key.secret).await;
    assert_eq!(signed_in.status, StatusCode::OK);
    assert_eq!(signed_in.json()["UserName"], "viewer");
    let viewer = browser_of(&signed_in);

    let described = h.query(&viewer, "DescribeLoadBalancers", "").await;
    assert_eq!(described.status, StatusCode::OK);
    assert!(
        described
            .body
            .contains("<LoadBalancerName>web</LoadBalancerName>")
    );
    let denied = h
        .query(&viewer, "DeleteLoadBalancer", "LoadBalancerName=web")
        .await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN, "{}", denied.body);
    assert!(denied.body.contains("<Code>AccessDenied</Code>"));
    assert!(denied.body.contains(&format!(
        "User: arn:aws:iam::{}:user/viewer is not authorized to perform: elasticloadbalancing:DeleteLoadBalancer",
        h.account_id
    )));
    assert_eq!(
        h.query(&root, "DescribeLoadBalancers", "")
            .await
            .body
            .matches("<LoadBalancerName>web</LoadBalancerName>")
            .count(),
        1,
        "still there"
    );

    // The metrics history is authorised as describing the load balancer.
    control::admin::policy_put(
        &h.store,
        &h.account_id,
        "viewer",
        "no-web",
        r#"{"Version":"2012-10-17","Statement":[
            {"Effect":"Deny","Action":"elasticloadbalancing:DescribeLoadBalancers",
             "Resource":"arn:aws:elasticloadbalancing:*:*:loadbalancer/web"}]}"#,
    )
    .await
    .unwrap();
    // A policy added after sign-in applies at once: sessions load policies per request.
    let metrics = h
        .console(
            &viewer,
            "GET",
            "/console/api/metrics?LoadBalancerName=web",
            None,
            false,
        )
        .await;
    assert_eq!(metrics.status, StatusCode::FORBIDDEN, "{}", metrics.body);
    assert_eq!(metrics.error_code(), "AccessDenied");
    let r = h
        .console(
            &root,
            "GET",
            "/console/api/metrics?LoadBalancerName=web",
            None,
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h
        .console(
            &root,
            "GET",
            "/console/api/metrics?LoadBalancerName=nope",
            None,
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert_eq!(r.error_code(), "LoadBalancerNotFound");

    // Servos and zones are for administrators only.
    let admin = h
        .console(&root, "GET", "/console/api/admin", None, false)
        .await;
    assert_eq!(admin.status, StatusCode::FORBIDDEN);
    assert_eq!(admin.error_code(), "AccessDenied");
}

#[tokio::test]
async fn metrics_history_follows_servo_heartbeats_and_health() {
    let h = harness().await;
    let (_, admin_key) = h.store.create_account("ops", true).await.unwrap();
    h.store
        .add_instance(&InventoryInstance {
            id: "i-1".into(),
            address: "198.19.0.11".into(),
            zone: "us-east-1a".into(),
            account_id: None,
        })
        .await
        .unwrap();
    let browser = h.sign_in().await;
    assert_eq!(
        h.query(&browser, "CreateLoadBalancer", CREATE).await.status,
        StatusCode::OK
    );
    let r = h
        .query(
            &browser,
            "RegisterInstancesWithLoadBalancer",
            "LoadBalancerName=web&Instances.member.1.InstanceId=i-1",
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);

    let servo = |path: &str, body: Value| {
        Request::post(path)
            .header("authorization", format!("Bearer s1:{SERVO_SECRET}"))
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let r = h
        .send(servo(
            "/servo/v1/register",
            json!({"ServoId": "s1", "Zone": "us-east-1a", "PublicAddresses": ["198.18.0.11"], "PrivateAddresses": []}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    assign::pass(
        &h.store,
        &AssignmentSettings {
            servos_per_zone: 1,
            servo_timeout: Duration::from_secs(10),
        },
        true,
    )
    .await
    .unwrap();

    let t0 = metrics::step_start(timefmt::now_millis()) - 2 * 10_000;
    // The servo's agent started before this control process: its first report is a baseline.
    let since = timefmt::now_millis() - 3_600_000;
    for (i, flows) in [100u64, 130, 170].into_iter().enumerate() {
        let report = json!([{
            "LoadBalancerName": format!("web-{}", h.account_id),
            "Since": since,
            "HealthyHostCount": 0,
            "UnHealthyHostCount": 1,
            "Listeners": [{"Protocol": "HTTP", "LoadBalancerPort": 80,
                "NewConnectionCount": flows, "RequestCount": flows,
                "ProcessedBytes": flows * 1000, "ProcessedPackets": flows * 10,
                "ActiveConnectionCount": 3}],
        }]);
        let r = h
            .send(servo(
                "/servo/v1/heartbeat",
                json!({"ServoId": "s1", "Counters": {"NewFlows": flows}, "Metrics": report}),
            ))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.body);
        let reports = control::metrics::current_reports(&h.state).await.unwrap();
        let at = t0 + i as i64 * 10_000;
        let step = h.state.metrics().sample(at, &reports);
        h.state.console().metrics.record(at, step);
    }
    let r = h
        .console(
            &browser,
            "GET",
            "/console/api/metrics?LoadBalancerName=web",
            None,
            false,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let view = r.json();
    assert_eq!(view["Period"], 10);
    let stamps = view["Timestamps"].as_array().unwrap();
    assert_eq!(stamps.len(), metrics::WINDOW);
    let series = |name: &str| -> Vec<Value> {
        let m = view["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == name)
            .unwrap_or_else(|| panic!("{name} missing"));
        m["Values"].as_array().unwrap().clone()
    };
    // The window ends at the step holding the request's "now": find the three recorded steps
    // by their timestamps (a step boundary may pass between recording and asking).
    let first = stamps
        .iter()
        .position(|t| t.as_i64() == Some(t0 / 1000))
        .expect("the first recorded step is in the window");
    assert!(first + 3 <= metrics::WINDOW, "{first}");
    let last3 = |name: &str| series(name)[first..first + 3].to_vec();
    // The first report sets the baseline; then the increases per step.
    assert_eq!(
        last3("NewConnectionCount"),
        [Value::Null, json!(30.0), json!(40.0)]
    );
    assert_eq!(
        last3("ProcessedBytes"),
        [Value::Null, json!(30000.0), json!(40000.0)]
    );
    // Gauges as reported.
    assert_eq!(
        last3("UnHealthyHostCount"),
        [json!(1.0), json!(1.0), json!(1.0)]
    );
    assert_eq!(
        last3("ActiveConnectionCount"),
        [json!(3.0), json!(3.0), json!(3.0)]
    );
    // An HTTP listener forwarded in XDP reports no HTTP codes: no data, not zero.
    assert!(series("HTTPCode_Backend_2XX").iter().all(Value::is_null));
    // A report the protocol refuses: a name that is not a load balancer's.
    let r = h
        .send(servo(
            "/servo/v1/heartbeat",
            json!({"ServoId": "s1", "Metrics": [{"LoadBalancerName": "no good", "Since": 1,
                "HealthyHostCount": 0, "UnHealthyHostCount": 0}]}),
        ))
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.body);

    // The administrators' overview: the servo, its zone, readiness.
    let ops = h.sign_in_as(&admin_key.id, &admin_key.secret).await;
    assert_eq!(ops.json()["Admin"], true);
    let ops = browser_of(&ops);
    let r = h
        .console(&ops, "GET", "/console/api/admin", None, false)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let o = r.json();
    assert_eq!(o["Readiness"]["Ready"], true, "{o}");
    assert_eq!(o["Zones"][0]["Name"], "us-east-1a");
    assert_eq!(o["Zones"][0]["LiveServos"], 1);
    assert_eq!(o["Zones"][0]["Assignments"], 1);
    assert_eq!(o["Servos"][0]["ServoId"], "s1");
    assert_eq!(o["Servos"][0]["Live"], true);
    assert_eq!(o["Servos"][0]["Counters"]["NewFlows"], 170.0);
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let h = harness().await;
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    let r = h.send(get("/console")).await;
    assert_eq!(r.status, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers[header::LOCATION], "/console/");
    let page = h.send(get("/console/")).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let csp = page.headers[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"));
    assert_eq!(page.headers[header::X_FRAME_OPTIONS], "DENY");
    assert!(page.body.contains("<html lang=\"en\">"));
    for src in [
        "assets/app.js",
        "assets/uPlot.iife.min.js",
        "assets/app.css",
    ] {
        assert!(page.body.contains(src), "{src}");
        let r = h.send(get(&format!("/console/{src}"))).await;
        assert_eq!(r.status, StatusCode::OK, "{src}");
        assert!(!r.body.is_empty());
    }
    let license = h.send(get("/console/assets/uPlot.LICENSE.txt")).await;
    assert!(license.body.contains("MIT License"));
    let missing = h.send(get("/console/assets/nope.js")).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let info = h.send(get("/console/api/info")).await;
    assert_eq!(info.json()["Regions"], json!(["us-east-1"]));
}
