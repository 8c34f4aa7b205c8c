//! The web console in a real headless browser (Debian's Chromium through chromedriver),
//! against the whole service in namespaces: control, a servo, two nginx instances. The browser
//! runs in the client namespace and does what a person would: sign in, create a load balancer
//! with an HTTP listener, set its health check, register two instances, watch both become
//! InService on the page, send traffic and watch the connection plot rise, delete the load
//! balancer, sign out. Screenshots of the load balancer page and of the connection plot are
//! written to `target/console-screenshots/`.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, ensure};
use fantoccini::{Client, Locator};
use tests::{
    browser::{Chrome, click, fill, save_png, text_of, wait_until},
    system::{ServoSpec, System, SystemSpec, WebSpec},
};

/// One servo and two web servers in one zone.
fn spec() -> SystemSpec {
    let s = |x: &str| x.to_string();
    SystemSpec {
        servos: vec![ServoSpec::new("servo-a", "zone-a")],
        web: vec![
            WebSpec {
                name: s("web1"),
                zone: s("zone-a"),
            },
            WebSpec {
                name: s("web2"),
                zone: s("zone-a"),
            },
        ],
        ..SystemSpec::poc()
    }
}

/// `target/console-screenshots/`, next to the test binaries.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test>
    let target = exe
        .ancestors()
        .nth(3)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    target.join("console-screenshots")
}

/// Reports what the page shows at a failure.
async fn page_state(client: &Client) -> String {
    let error = text_of(client, "#error")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let title = text_of(client, "h1")
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    format!("page '{title}', error box: '{error}'")
}

/// The `data-state` of each instance row.
async fn instance_states(client: &Client) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for row in client
        .find_all(Locator::Css("#instance-rows tr[data-instance]"))
        .await?
    {
        out.push((
            row.attr("data-instance").await?.unwrap_or_default(),
            row.attr("data-state").await?.unwrap_or_default(),
        ));
    }
    Ok(out)
}

/// Collects the page's script errors and CSP violations from now on (the console is one page,
/// so listeners installed once see everything that follows).
const WATCH_ERRORS: &str = r#"
window.__problems = [];
window.addEventListener("error", (e) => window.__problems.push("error: " + e.message));
window.addEventListener("unhandledrejection", (e) => window.__problems.push("rejection: " + e.reason));
document.addEventListener("securitypolicyviolation", (e) => window.__problems.push("CSP: " + e.violatedDirective + " " + e.blockedURI));
"#;

async fn problems(client: &Client) -> anyhow::Result<Vec<String>> {
    let v = client
        .execute("return window.__problems || [];", vec![])
        .await?;
    Ok(serde_json::from_value(v)?)
}

async fn drive(sys: &System, chrome: &Chrome) -> anyhow::Result<()> {
    let client = chrome.session(1280, 2000).await?;
    let result = scenario(sys, &client).await;
    let result = match result {
        Ok(()) => Ok(()),
        Err(e) => {
            let shot = client
                .screenshot()
                .await
                .ok()
                .and_then(|png| save_png(&screenshot_dir(), "failure.png", &png).ok());
            Err(e.context(format!(
                "{}; screenshot: {shot:?}; chromedriver log tail:\n{}",
                page_state(&client).await,
                chrome.log_tail(30)
            )))
        }
    };
    let _ = client.close().await;
    result
}

async fn scenario(sys: &System, client: &Client) -> anyhow::Result<()> {
    let console = format!("{}/console/", sys.controls[0].url);
    client.goto(&console).await?;
    client.execute(WATCH_ERRORS, vec![]).await?;

    // Sign in with the account's access key.
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#sign-in"))
        .await
        .context("the sign-in form")?;
    fill(
        client,
        "#sign-in input[name=AccessKeyId]",
        &sys.account.access_key,
    )
    .await?;
    fill(
        client,
        "#sign-in input[name=SecretAccessKey]",
        &sys.account.secret,
    )
    .await?;
    click(client, "#sign-in button[type=submit]").await?;
    wait_until(
        Duration::from_secs(20),
        "the load balancer list",
        || async { text_of(client, "#lb-list caption").await },
    )
    .await?;
    let who = text_of(client, "#who-text").await?.unwrap_or_default();
    ensure!(who.contains(&sys.account.id), "signed in as {who}");
    // The session lives in an HttpOnly cookie: the page's script cannot read it.
    let cookies = client.execute("return document.cookie;", vec![]).await?;
    ensure!(
        !cookies
            .as_str()
            .unwrap_or("")
            .contains("elb_console_session"),
        "the session cookie is visible to scripts: {cookies}"
    );

    // Create load balancer "web" in zone-a with an HTTP:80 -> HTTP:80 listener.
    click(client, "a[href='#/create']").await?;
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#create-lb"))
        .await?;
    fill(client, "#create-lb input[name=LoadBalancerName]", "web").await?;
    let zone_box = client
        .find(Locator::Css("#create-lb input[name=zone][value=zone-a]"))
        .await?;
    if zone_box.prop("checked").await?.as_deref() != Some("true") {
        zone_box.click().await?;
    }
    // The listener row's defaults are HTTP 80 -> HTTP 80.
    click(client, "#create-lb button[type=submit]").await?;
    wait_until(
        Duration::from_secs(20),
        "the load balancer page",
        || async { Ok(text_of(client, "#lb-dns").await?.filter(|t| !t.is_empty())) },
    )
    .await?;
    let dns = text_of(client, "#lb-dns").await?.unwrap_or_default();
    ensure!(dns == sys.dns_name("web"), "DNS name on the page: {dns}");

    // A quick health check, so that instances pass within seconds.
    fill(client, "#health-check input[name=Target]", "HTTP:80/name").await?;
    fill(client, "#health-check input[name=Interval]", "5").await?;
    fill(client, "#health-check input[name=Timeout]", "2").await?;
    fill(client, "#health-check input[name=UnhealthyThreshold]", "2").await?;
    fill(client, "#health-check input[name=HealthyThreshold]", "2").await?;
    click(client, "#health-check button[type=submit]").await?;
    wait_until(
        Duration::from_secs(20),
        "the health check to be saved",
        || async {
            Ok(text_of(client, "#notice")
                .await?
                .filter(|t| t.contains("Health check saved")))
        },
    )
    .await?;

    // An API error is shown with the API's message.
    fill(
        client,
        "#register-instances input[name=Instances]",
        "i-nope",
    )
    .await?;
    click(client, "#register-instances button[type=submit]").await?;
    let error = wait_until(Duration::from_secs(20), "the API's error", || async {
        Ok(text_of(client, "#error").await?.filter(|t| !t.is_empty()))
    })
    .await?;
    ensure!(
        error.contains("InvalidInstance") && error.contains("i-nope"),
        "error shown: {error}"
    );

    // Register both instances; both become InService on the page, which polls.
    fill(
        client,
        "#register-instances input[name=Instances]",
        "i-web1, i-web2",
    )
    .await?;
    click(client, "#register-instances button[type=submit]").await?;
    let started = Instant::now();
    let states = wait_until(
        Duration::from_secs(90),
        "both instances InService on the page",
        || async {
            let states = instance_states(client).await?;
            let ok = states.len() == 2 && states.iter().all(|(_, s)| s == "InService");
            Ok(ok.then_some(states))
        },
    )
    .await?;
    eprintln!(
        "InService on the page after {:?}: {states:?}",
        started.elapsed()
    );

    // Traffic through the servo's VIP, in two bursts; the connection plot rises with each.
    let vip = sys.servos[0].vip;
    let plot = "figure[data-metric=NewConnectionCount]";
    let mut sent = 0;
    for burst in [30, 20] {
        let mut seen = std::collections::BTreeMap::new();
        for _ in 0..burst {
            let who = sys.get_name(SocketAddr::from((vip, 80)))?;
            *seen.entry(who).or_insert(0u32) += 1;
        }
        ensure!(
            seen.get("web1") == Some(&(burst / 2)) && seen.get("web2") == Some(&(burst / 2)),
            "round robin over both instances: {seen:?}"
        );
        sent += burst;
        let total = wait_until(
            Duration::from_secs(60),
            "the connection plot to rise",
            || async {
                let Ok(fig) = client.find(Locator::Css(plot)).await else {
                    return Ok(None);
                };
                let total: f64 = fig
                    .attr("data-total")
                    .await?
                    .unwrap_or_default()
                    .parse()
                    .unwrap_or(0.0);
                // Health checks are not forwarded flows: only the client's connections count.
                Ok((total >= f64::from(sent)).then_some(total))
            },
        )
        .await?;
        eprintln!("connection plot total after {sent} connections: {total}");
    }
    // For pictures with some history (the README's): ELB_CONSOLE_DEMO_SECS=N keeps traffic
    // going in bursts of varying size for N more seconds.
    let demo = std::env::var("ELB_CONSOLE_DEMO_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let until = Instant::now() + Duration::from_secs(demo);
    let mut round = 0u32;
    while Instant::now() < until {
        for _ in 0..(4 + (round * 7) % 17) {
            sys.get_name(SocketAddr::from((vip, 80)))?;
        }
        round += 1;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    if demo > 0 {
        // Let the page catch up with the last step.
        tokio::time::sleep(Duration::from_secs(12)).await;
    }
    ensure!(
        client
            .find(Locator::Css(&format!("{plot} canvas")))
            .await
            .is_ok(),
        "the plot is drawn"
    );

    // Screenshots: the load balancer page (from the top) and the connection plot.
    client.execute("window.scrollTo(0, 0);", vec![]).await?;
    let dir = screenshot_dir();
    let page = save_png(&dir, "console-lb-page.png", &client.screenshot().await?)?;
    let fig = client.find(Locator::Css(plot)).await?;
    client
        .execute(
            "arguments[0].scrollIntoView({block: 'center'});",
            vec![serde_json::to_value(&fig)?],
        )
        .await?;
    let plot_png = save_png(&dir, "console-metrics-plot.png", &fig.screenshot().await?)?;
    eprintln!("screenshots: {} {}", page.display(), plot_png.display());

    edit_settings(sys, client).await?;

    // Delete the load balancer through the confirmation dialog.
    click(client, "#delete-lb").await?;
    wait_until(
        Duration::from_secs(10),
        "the confirmation dialog",
        || async {
            let open = client
                .find(Locator::Css("#delete-dialog"))
                .await?
                .attr("open")
                .await?;
            Ok(open.map(|_| ()))
        },
    )
    .await?;
    click(client, "#confirm-delete").await?;
    wait_until(Duration::from_secs(20), "the list without web", || async {
        let notice = text_of(client, "#notice").await?.unwrap_or_default();
        let listed = client
            .find_all(Locator::Css("#lb-list tr[data-lb]"))
            .await?
            .len();
        Ok((notice.contains("web deleted") && listed == 0).then_some(()))
    })
    .await?;
    let described = sys.aws(&["describe-load-balancers"])?;
    ensure!(
        described["LoadBalancerDescriptions"]
            .as_array()
            .is_some_and(Vec::is_empty),
        "the API still lists: {described}"
    );

    let seen_problems = problems(client).await?;
    ensure!(
        seen_problems.is_empty(),
        "script errors or CSP violations: {seen_problems:?}"
    );

    // Sign out: back to the sign-in form, and the session is gone.
    click(client, "#sign-out").await?;
    client
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css("#sign-in"))
        .await?;
    let status = client
        .execute(
            "return fetch('api/session', {credentials: 'same-origin'}).then((r) => r.status);",
            vec![],
        )
        .await?;
    ensure!(status == 401, "after sign-out api/session answers {status}");

    admin_view(sys, client).await
}

/// Waits for the notice that confirms a change.
async fn confirmed(client: &Client, text: &str) -> anyhow::Result<()> {
    wait_until(Duration::from_secs(20), text, || async {
        let error = text_of(client, "#error").await?.unwrap_or_default();
        ensure!(error.is_empty(), "the page shows an error: {error}");
        Ok(text_of(client, "#notice")
            .await?
            .filter(|t| t.contains(text))
            .map(|_| ()))
    })
    .await
}

/// Policies (stickiness on a listener), a new listener and attributes, through the page's
/// forms; checked through the API with awscli.
async fn edit_settings(sys: &System, client: &Client) -> anyhow::Result<()> {
    fill(client, "#lb-cookie-policy input[name=PolicyName]", "sticky").await?;
    fill(
        client,
        "#lb-cookie-policy input[name=CookieExpirationPeriod]",
        "60",
    )
    .await?;
    click(client, "#lb-cookie-policy button[type=submit]").await?;
    confirmed(client, "Policy sticky created").await?;
    click(
        client,
        "form[data-listener-policies='80'] input[value=sticky]",
    )
    .await?;
    click(
        client,
        "form[data-listener-policies='80'] button[type=submit]",
    )
    .await?;
    confirmed(client, "Policies of the listener on port 80 set").await?;

    client
        .find(Locator::Css("#add-listener select[name=Protocol]"))
        .await?
        .select_by_value("TCP")
        .await?;
    client
        .find(Locator::Css("#add-listener select[name=InstanceProtocol]"))
        .await?
        .select_by_value("TCP")
        .await?;
    fill(client, "#add-listener input[name=LoadBalancerPort]", "8080").await?;
    fill(client, "#add-listener input[name=InstancePort]", "80").await?;
    click(client, "#add-listener button[type=submit]").await?;
    confirmed(client, "Listener added").await?;

    click(client, "#attributes-form .check input").await?; // cross-zone, was off
    fill(
        client,
        "#attributes-form input[name='ConnectionSettings.IdleTimeout']",
        "120",
    )
    .await?;
    click(client, "#attributes-form button[type=submit]").await?;
    confirmed(client, "Attributes saved").await?;

    let lb = &sys.aws(&["describe-load-balancers", "--load-balancer-names", "web"])?["LoadBalancerDescriptions"]
        [0];
    let listeners = lb["ListenerDescriptions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let on = |port: u64| {
        listeners
            .iter()
            .find(|l| l["Listener"]["LoadBalancerPort"] == port)
            .cloned()
            .unwrap_or_default()
    };
    ensure!(
        on(80)["PolicyNames"] == serde_json::json!(["sticky"]),
        "listener 80: {}",
        on(80)
    );
    ensure!(
        on(8080)["Listener"]["Protocol"] == "TCP",
        "listener 8080: {}",
        on(8080)
    );
    ensure!(
        lb["Policies"]["LBCookieStickinessPolicies"][0]["CookieExpirationPeriod"] == 60,
        "policies: {}",
        lb["Policies"]
    );
    let attrs = sys.aws(&[
        "describe-load-balancer-attributes",
        "--load-balancer-name",
        "web",
    ])?;
    let a = &attrs["LoadBalancerAttributes"];
    ensure!(
        a["CrossZoneLoadBalancing"]["Enabled"] == true
            && a["ConnectionSettings"]["IdleTimeout"] == 120,
        "attributes: {a}"
    );
    Ok(())
}

/// An administrator signs in and sees servos, zones and readiness.
async fn admin_view(sys: &System, client: &Client) -> anyhow::Result<()> {
    let ops: serde_json::Value =
        serde_json::from_str(&sys.admin(&["account", "create", "--name", "ops", "--admin"])?)?;
    let key = ops["AccessKeyId"].as_str().context("AccessKeyId")?;
    let secret = ops["SecretAccessKey"].as_str().context("SecretAccessKey")?;
    fill(client, "#sign-in input[name=AccessKeyId]", key).await?;
    fill(client, "#sign-in input[name=SecretAccessKey]", secret).await?;
    click(client, "#sign-in button[type=submit]").await?;
    client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("#nav-admin:not([hidden]) a"))
        .await
        .context("the administrators' link")?;
    click(client, "#nav-admin a").await?;
    let readiness = wait_until(Duration::from_secs(20), "the readiness", || async {
        text_of(client, "#readiness").await
    })
    .await?;
    ensure!(readiness == "Ready", "readiness: {readiness}");
    let state = text_of(client, "tr[data-servo=servo-a] td.state")
        .await?
        .unwrap_or_default();
    ensure!(state == "Live", "servo-a: {state}");
    save_png(
        &screenshot_dir(),
        "console-admin.png",
        &client.screenshot().await?,
    )?;
    Ok(())
}

#[test]
fn console_drives_a_load_balancer_in_a_real_browser() {
    let sys = System::start(spec()).expect("starting the system");
    let chrome = Chrome::start(&sys.client).expect("starting chromedriver");
    let result = sys.client.run(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(drive(&sys, &chrome))
    });
    if let Err(e) = result {
        panic!(
            "{e:#}\ncontrol log:\n{}",
            sys.controls[0]
                .log_text()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
