//! The status page in a real browser: headless Chromium (tests/chromium.rs) opens `/ui/` on a
//! running slipway while a k3s cluster (one server, one agent) is made on the Proxmox stand-in
//! and installs. The login form refuses a wrong token and names why; a token in the URL
//! fragment moves into session storage and out of the address; the nodes' config fetches and
//! phone-homes appear in the event list and in their boot bars while the page stays open (the
//! event stream, not a reload); the cluster's stage, the load balancer's backend and the DNS
//! zone follow. The page runs under its Content-Security-Policy with no script error.
//! Screenshots of the page and each view go to `target/screenshots/` (CI keeps them). Needs root.

use std::path::PathBuf;
use std::time::Duration;

use crate::chromium::Browser;
use crate::support::{self, TOKEN};

const LIMIT: Duration = Duration::from_secs(30);

fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

#[test]
fn the_status_page_follows_a_k3s_install_live_in_chromium() {
    let (dir, lab, pve) = crate::k3s::lab("ui");
    let groups = [
        r#"{ name = "server", role = "control-plane", count = 1, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned(),
        r#"{ name = "agent", role = "worker", count = 1, cores = 1, memory = "1GiB", disks = [{ size = "10GiB" }] }"#.to_owned(),
    ];
    let config = crate::k3s::config_with(dir.path(), &pve, &groups, "[]");
    let mut text = std::fs::read_to_string(&config).expect("config");
    text.push_str(&format!("[dns]\nlisten = [\"{}:53\"]\n", crate::boot::SERVER));
    std::fs::write(&config, text).expect("config");
    let (daemon, ips) = crate::okd::powered_on(&lab, &config, "edge", 2);

    let mut browser = Browser::start(Some(&lab.ns), dir.path(), 1400, 1000);
    // Without a token: the login form; a wrong token is refused, and the page says so.
    browser.open(&daemon.url("/ui/"));
    browser.wait_for("the login form", LIMIT, "!document.getElementById('login').hidden");
    browser.eval(
        "document.getElementById('token').value = 'not-the-token'; \
         document.getElementById('login').requestSubmit(); true",
    );
    browser.wait_for(
        "the refusal",
        LIMIT,
        "document.getElementById('login-error').textContent.includes('refused the token')",
    );
    assert_eq!(browser.eval("sessionStorage.getItem('slipway-token')"), serde_json::Value::Null);

    // The token in the fragment: kept in session storage, gone from the address.
    browser.open(&daemon.url(&format!("/ui/#token={TOKEN}")));
    browser.wait_for(
        "cluster edge with its two nodes",
        LIMIT,
        "document.querySelectorAll('[data-cluster=edge] tr[data-node]').length === 2",
    );
    assert_eq!(browser.eval("location.hash"), "");
    assert_eq!(browser.eval("sessionStorage.getItem('slipway-token')"), TOKEN);
    browser.wait_for("the live stream", LIMIT, "document.getElementById('live').textContent === 'live'");
    let phases = browser
        .eval("[...document.querySelectorAll('[data-cluster=edge] td.phase')].map(td => td.textContent).join(',')");
    assert_eq!(phases, "powering-on,powering-on");
    browser.screenshot(None, &screenshots().join("status-page-powering-on.png"));

    // The nodes fetch their configs and phone home while the page is open.
    let running = crate::k3s::run(dir.path(), &lab, &ips, &["server-0"]);
    let seen = browser.wait_for(
        "server-0's phone-home in the event list",
        LIMIT,
        "document.querySelector('#event-list li[data-type=phone_home] .node')?.textContent === 'server-0' || \
         [...document.querySelectorAll('#event-list li[data-type=phone_home] .node')].some(n => n.textContent === 'server-0')",
    );
    eprintln!("the phone-home was on the page {seen:?} after the node's request returned");
    browser.wait_for(
        "server-0's boot bar reaching phone-home",
        LIMIT,
        "document.querySelector('#boots tr[data-node=server-0] .segment.step-phone-home') !== null",
    );
    support::eventually("the cluster ready", Duration::from_secs(180), || {
        let status = crate::k3s::status(&lab, &daemon);
        assert_ne!(status["stage"]["stage"], "failed", "{status}");
        status["stage"]["stage"] == "ready"
    });
    browser.wait_for(
        "stage ready on the page",
        LIMIT,
        "document.querySelector('[data-cluster=edge] .stage strong')?.textContent === 'ready'",
    );
    browser.wait_for("server-0 up in the API pool", LIMIT, "document.querySelector('#lb td.backend.up') !== null");
    browser.wait_for(
        "the cluster's zone",
        LIMIT,
        "[...document.querySelectorAll('#dns summary')].some(s => s.textContent.startsWith('edge.lab.example'))",
    );
    *running.stop.lock().expect("stop") = true;

    let shots = screenshots();
    browser.screenshot(None, &shots.join("status-page.png"));
    for view in ["clusters", "boots", "lb", "dns", "events"] {
        browser.screenshot(Some(&format!("#{view}")), &shots.join(format!("status-page-{view}.png")));
    }
    let errors = browser.console_errors();
    assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
}
