//! The router driven in-process with `tower::ServiceExt::oneshot`: signed requests through
//! `app(state)` against a SQLite store in a temporary directory.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use control::config::ServiceConfig;
use control::inventory::Inventory;
use control::model::InstanceHealth;
use control::store::{HealthUpdate, InventoryInstance, Store};
use control::{AppState, app, timefmt};
use http_body_util::BodyExt;
use tower::ServiceExt;

struct Harness {
    _dir: tempfile::TempDir,
    store: Store,
    state: AppState,
    key_id: String,
    secret: String,
    account_id: String,
}

async fn harness() -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("control.db").display());
    let store = Store::open(&db).await.unwrap();
    store.add_zone("us-east-1a", "us-east-1").await.unwrap();
    // A live servo in the zone, so that load balancers there can be served.
    store
        .create_servo(
            "s1",
            "us-east-1a",
            &control::servo_api::secret_hash("secret"),
        )
        .await
        .unwrap();
    store
        .register_servo("s1", &["198.18.0.1".parse().unwrap()], &[], None, 10_000)
        .await
        .unwrap();
    let (account, key) = store.create_account("test", false).await.unwrap();
    let state = AppState::new(
        ServiceConfig::default(),
        store.clone(),
        Inventory::BuiltIn(store.clone()),
    );
    Harness {
        _dir: dir,
        store,
        state,
        key_id: key.id,
        secret: key.secret,
        account_id: account.id,
    }
}

impl Harness {
    /// One pass of the assignment task: the zone's servo takes the load balancers.
    async fn assign(&self) {
        let settings = control::assign::AssignmentSettings {
            servos_per_zone: 1,
            servo_timeout: std::time::Duration::from_secs(10),
        };
        control::assign::pass(&self.store, &settings, true)
            .await
            .unwrap();
    }

    async fn call(&self, body: &str) -> (StatusCode, String) {
        let amz_date = timefmt::format_amz_date(timefmt::now_millis() / 1000);
        let headers = vec![
            (
                "content-type".to_string(),
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("host".to_string(), "control.test".to_string()),
            ("x-amz-date".to_string(), amz_date.clone()),
        ];
        let signer = elb_sigv4::Signer {
            access_key_id: &self.key_id,
            secret_access_key: &self.secret,
            region: "us-east-1",
            service: "elasticloadbalancing",
        };
        let auth = signer
            .authorization(&elb_sigv4::Request {
                method: "POST",
                raw_path: "/",
                raw_query: "",
                headers: &headers,
                body: body.as_bytes(),
            })
            .unwrap();
        let request = Request::post("/")
            .header("content-type", "application/x-www-form-urlencoded")
            .header("host", "control.test")
            .header("x-amz-date", amz_date)
            .header("authorization", auth)
            .body(Body::from(body.to_string()))
            .unwrap();
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(bytes.to_vec()).unwrap())
    }
}

const CREATE: &str = "Action=CreateLoadBalancer&Version=2012-06-01&LoadBalancerName=web\
    &AvailabilityZones.member.1=us-east-1a&Listeners.member.1.Protocol=HTTP\
    &Listeners.member.1.LoadBalancerPort=80&Listeners.member.1.InstancePort=8080";

#[tokio::test]
async fn create_describe_and_errors() {
    let h = harness().await;
    let (status, body) = h.call(CREATE).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(&format!(
        "<DNSName>web-{}.lb.elb.local</DNSName>",
        h.account_id
    )));

    let (status, body) = h
        .call("Action=DescribeLoadBalancers&Version=2012-06-01")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("<HealthCheck><Target>TCP:8080</Target><Interval>30</Interval><Timeout>5</Timeout><UnhealthyThreshold>2</UnhealthyThreshold><HealthyThreshold>10</HealthyThreshold></HealthCheck>"));

    let (status, body) = h.call(CREATE).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("<Code>DuplicateLoadBalancerName</Code>"));

    let (status, body) = h.call("Action=DisableAvailabilityZonesForLoadBalancer&Version=2012-06-01&LoadBalancerName=web&AvailabilityZones.member.1=us-east-1a").await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body.contains("<Code>InvalidConfigurationRequest</Code>"));
}

#[tokio::test]
async fn unsigned_requests_are_refused() {
    let h = harness().await;
    let request = Request::post("/")
        .body(Body::from(
            "Action=DescribeLoadBalancers&Version=2012-06-01",
        ))
        .unwrap();
    let response = app(h.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("<Code>MissingAuthenticationToken</Code>"));
}

#[tokio::test]
async fn internal_failures_reveal_nothing() {
    let h = harness().await;
    // With the database gone every request fails inside; the client learns only that.
    h.store.close().await;
    let (status, body) = h
        .call("Action=DescribeLoadBalancers&Version=2012-06-01")
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        body.contains("<Type>Receiver</Type><Code>InternalFailure</Code>"),
        "{body}"
    );
    assert!(
        !body.to_lowercase().contains("pool") && !body.contains("sqlite"),
        "{body}"
    );
}

#[tokio::test]
async fn servo_health_reports_and_change_notifications() {
    let h = harness().await;
    h.store
        .add_instance(&InventoryInstance {
            id: "i-0001".into(),
            address: "198.18.0.10".into(),
            zone: "us-east-1a".into(),
            account_id: None,
        })
        .await
        .unwrap();
    let mut changes = h.store.subscribe();
    let before = *changes.borrow_and_update();
    assert_eq!(h.call(CREATE).await.0, StatusCode::OK);
    // The assignment task's pass: the servo of the zone takes the load balancer.
    h.assign().await;
    // Every committed change bumps the version that a long-poll would wait on.
    tokio::time::timeout(std::time::Duration::from_secs(5), changes.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(*changes.borrow() > before);

    let (status, body) = h
        .call("Action=RegisterInstancesWithLoadBalancer&Version=2012-06-01&LoadBalancerName=web&Instances.member.1.InstanceId=i-0001")
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, body) = h
        .call("Action=DescribeInstanceHealth&Version=2012-06-01&LoadBalancerName=web")
        .await;
    assert!(body.contains("<State>OutOfService</State><ReasonCode>ELB</ReasonCode><Description>Instance registration is still in progress.</Description>"));

    // The zone's servo reports it healthy: a new version (other zones' servos carry the
    // state), and DescribeInstanceHealth shows it; an instance not registered is ignored.
    let name = format!("web-{}", h.account_id);
    let update = |id: &str| HealthUpdate {
        lb_name: name.clone(),
        instance_id: id.into(),
        health: InstanceHealth::in_service(),
    };
    let version = h.store.config_version();
    let outcome = h
        .store
        .report_health("s1", "us-east-1a", &[update("i-0001"), update("i-9999")])
        .await
        .unwrap();
    assert_eq!((outcome.accepted, outcome.ignored), (1, 1));
    assert!(h.store.config_version() > version);
    let (_, body) = h
        .call("Action=DescribeInstanceHealth&Version=2012-06-01&LoadBalancerName=web")
        .await;
    assert!(
        body.contains("<InstanceId>i-0001</InstanceId><State>InService</State>"),
        "{body}"
    );
}

#[tokio::test]
async fn changes_no_live_servo_can_serve_are_refused() {
    let h = harness().await;
    h.store.add_zone("us-east-1b", "us-east-1").await.unwrap();
    // Zone b has no servo at all.
    let (status, body) = h.call(&CREATE.replace("us-east-1a", "us-east-1b")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("<Code>InvalidConfigurationRequest</Code>"),
        "{body}"
    );
    assert!(
        body.contains("no load balancer node (servo) is live in Availability Zone us-east-1b"),
        "{body}"
    );
    let (status, _) = h
        .call("Action=DescribeLoadBalancers&Version=2012-06-01&LoadBalancerNames.member.1=web")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "nothing was created");
    // In zone a, port 80 of the servo's only address is free: created, and assigned.
    assert_eq!(h.call(CREATE).await.0, StatusCode::OK);
    h.assign().await;
    // A second load balancer on port 80 finds the address taken; on port 81 it fits.
    let (status, body) = h.call(&CREATE.replace("=web", "=web2")).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body.contains("LoadBalancerPort 80 is taken") && body.contains("us-east-1a"),
        "{body}"
    );
    let on_81 = CREATE
        .replace("=web", "=web2")
        .replace("LoadBalancerPort=80", "LoadBalancerPort=81");
    assert_eq!(h.call(&on_81).await.0, StatusCode::OK);
    // Enabling a zone without servos and adding a listener on a taken port are refused too.
    let (status, body) = h.call("Action=EnableAvailabilityZonesForLoadBalancer&Version=2012-06-01&LoadBalancerName=web&AvailabilityZones.member.1=us-east-1b").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("us-east-1b"), "{body}");
    h.assign().await;
    let (status, body) = h.call("Action=CreateLoadBalancerListeners&Version=2012-06-01&LoadBalancerName=web2&Listeners.member.1.Protocol=TCP&Listeners.member.1.LoadBalancerPort=80&Listeners.member.1.InstancePort=80").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body.contains("LoadBalancerPort 80"), "{body}");
    // A load balancer in zones a and b while b has a servo; then b's servo goes away. Changes
    // that zone a's servo can serve are still accepted: a zone without any live servo serves
    // nothing either way, and refusing would only block the zone that works.
    h.store
        .create_servo(
            "s2",
            "us-east-1b",
            &control::servo_api::secret_hash("secret"),
        )
        .await
        .unwrap();
    h.store
        .register_servo("s2", &["198.18.0.2".parse().unwrap()], &[], None, 10_000)
        .await
        .unwrap();
    let both = CREATE
        .replace("=web", "=both")
        .replace("LoadBalancerPort=80", "LoadBalancerPort=82")
        + "&AvailabilityZones.member.2=us-east-1b";
    let (status, body) = h.call(&both).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    h.assign().await;
    assert!(h.store.remove_servo("s2").await.unwrap());
    let (status, body) = h.call("Action=CreateLoadBalancerListeners&Version=2012-06-01&LoadBalancerName=both&Listeners.member.1.Protocol=TCP&Listeners.member.1.LoadBalancerPort=83&Listeners.member.1.InstancePort=80").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = h.call("Action=EnableAvailabilityZonesForLoadBalancer&Version=2012-06-01&LoadBalancerName=both&AvailabilityZones.member.1=us-east-1a").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "zones already enabled are not checked again: {body}"
    );

    // The readiness endpoint: zone a ready, zone b not.
    let response = app(h.state.clone())
        .oneshot(Request::get("/health").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let status: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(status["Ready"], false, "{status}");
    let zones = status["Zones"].as_array().unwrap();
    assert_eq!(zones[0]["Zone"], "us-east-1a");
    assert_eq!(zones[0]["Ready"], true);
    assert_eq!(zones[0]["LiveServos"], 1);
    assert_eq!(zones[0]["Public"]["FreeByPort"]["80"], 0, "{status}");
    assert_eq!(zones[1]["Ready"], false);
}
