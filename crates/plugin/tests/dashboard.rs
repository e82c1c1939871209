//! The dashboard as a person sees it: `kubectl failover dashboard` (kubectl finding the
//! plugin on PATH) against the real control plane with a controller replica, looked at in a
//! real browser (Debian's headless Chromium, driven through chromedriver over WebDriver).
//!
//! Needs `chromium` and `chromium-driver` (`bash lab/tools/packages.sh test` installs them).
//! Leaves a screenshot in `target/test-artifacts/dashboard.png`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::kubectl_failover_command;
use fantoccini::{Client, ClientBuilder, Locator};
use kube::api::{Api, PostParams};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, MemberState};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, nodes_and_cluster, online_owner, wait_for,
};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(60);
/// How long the page may take to show a failover once the owner's heartbeats stop: the
/// cluster declares a node down 3 s after its last heartbeat, and the move takes a fraction
/// of a second more; the rest is slack for a loaded machine.
const FAILOVER_SHOWN: Duration = Duration::from_secs(30);

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A process killed (and reaped) when dropped, whatever way the test ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `kubectl failover dashboard ARGS`; returns it and the address it says it serves.
fn start_dashboard(args: &[&str]) -> (Killed, String) {
    let mut child = kubectl_failover_command(&[&["dashboard"][..], args].concat())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let child = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let _ = tx.send(lines.next());
        for _ in lines {}
    });
    let line = rx
        .recv_timeout(T)
        .expect("the dashboard says where it serves")
        .expect("a line")
        .unwrap();
    let url = line
        .strip_prefix("serving on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .to_string();
    (child, url)
}

/// chromedriver on a free loopback port, once it accepts connections.
fn start_chromedriver() -> (Killed, u16) {
    for needed in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            Path::new(needed).exists(),
            "{needed} is missing: `bash lab/tools/packages.sh test` installs chromium and \
             chromium-driver"
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .args([format!("--port={port}"), "--allowed-ips=127.0.0.1".into()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let child = Killed(child);
    let deadline = Instant::now() + T;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}

/// A WebDriver session of a headless Chromium with a fresh profile that reaches nothing
/// but loopback (no background requests of its own to the internet).
async fn browser(port: u16, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), json!("chrome"));
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--window-size=1440,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap()
}

/// Runs `script` (a function body; `arguments` are `args`) every 50 ms until `done` holds
/// for what it returns, which is then returned; after `timeout`, fails with `what` and the
/// page's text.
async fn until(
    page: &Client,
    what: &str,
    timeout: Duration,
    script: &str,
    args: Vec<Value>,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let v = page.execute(script, args.clone()).await.unwrap();
        if done(&v) {
            return v;
        }
        if Instant::now() > deadline {
            let text = page
                .execute("return document.body.innerText", vec![])
                .await
                .unwrap();
            panic!(
                "the page did not show {what} within {timeout:?} (last: {v}); it shows:\n{}",
                text.as_str().unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The node whose card holds instance `arguments[0]`, and its phase, as drawn now (or at
/// the step the slider is on): `[node, phase, drawn as the past]`, or null.
const WHERE_IS: &str = r#"
    const chip = Array.from(document.querySelectorAll('.member .instance'))
        .find((c) => c.dataset.key === arguments[0]);
    if (!chip) return null;
    return [chip.closest('.member').dataset.node, chip.dataset.phase, chip.classList.contains('past')];
"#;

/// The state (`data-state`) of member `arguments[0]`'s card, or null.
const MEMBER_STATE: &str = r#"
    const card = Array.from(document.querySelectorAll('.member'))
        .find((m) => m.dataset.node === arguments[0]);
    return card ? card.dataset.state : null;
"#;

/// The text of the element `css` as drawn now, read in one call (empty if there is none).
async fn inner_text(page: &Client, css: &str) -> String {
    let v = page
        .execute(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';",
            vec![json!(css)],
        )
        .await
        .unwrap();
    v.as_str().unwrap_or_default().to_string()
}

/// The toast's text while it is shown, or null.
const TOAST: &str = r#"
    const toast = document.getElementById('toast');
    return toast.hidden ? null : toast.innerText;
"#;

/// Clicks the element `css` once it is there. The page redraws as events arrive: an
/// element found a moment before may be replaced by the time it is clicked, so a click
/// refused for that is tried again on the element found anew.
async fn click(page: &Client, css: &str) {
    let deadline = Instant::now() + T;
    loop {
        let clicked = match page.wait().at_most(T).for_element(Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(e) => Err(e),
        };
        match clicked {
            Ok(()) => return,
            Err(e) if Instant::now() < deadline => {
                eprintln!("clicking {css}: {e}; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{css}: {e}"),
        }
    }
}

/// POSTs `body` to the dashboard's `path` from the page, without the page's token; returns
/// the status.
async fn post_without_token(page: &Client, path: &str, body: Value) -> Value {
    page.execute(
        "return fetch(arguments[0], {method: 'POST', headers: {'Content-Type': \
         'application/json'}, body: JSON.stringify(arguments[1])}).then((r) => r.status)",
        vec![json!(path), body],
    )
    .await
    .unwrap()
}

/// The steps (`data-step`) of the newest move of kind `arguments[1]` of instance
/// `arguments[0]` in the timeline of recent moves, and its heading.
const TIMELINE_MOVE: &str = r#"
    const move = Array.from(document.querySelectorAll('#moves .move'))
        .find((m) => m.dataset.instance === arguments[0] && m.dataset.kind === arguments[1]);
    if (!move) return null;
    return {
        id: move.dataset.move,
        heading: move.querySelector('h3').innerText,
        steps: Array.from(move.querySelectorAll('button.step')).map((b) => b.dataset.step),
        indexes: Array.from(move.querySelectorAll('button.step')).map((b) => Number(b.dataset.index)),
    };
"#;

fn artifacts_dir() -> PathBuf {
    // target/<profile>/kubectl-failover → target/test-artifacts
    Path::new(env!("CARGO_BIN_EXE_kubectl-failover"))
        .parent()
        .and_then(Path::parent)
        .unwrap()
        .join("test-artifacts")
}

/// Waits until the controller's status of cluster `name` has `up` members Up, one of them
/// `owner` with an instance.
async fn cluster_status_of(client: &kube::Client, name: &str, up: usize, owner: &str) {
    wait_for(
        Api::<FailoverCluster>::all(client.clone()),
        name,
        T,
        "cluster status",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.members
                    .iter()
                    .filter(|m| m.state == MemberState::Up)
                    .count()
                    == up
                    && s.members
                        .iter()
                        .any(|m| m.name == owner && m.instance_count > 0)
            })
        },
    )
    .await;
}

/// A cluster `prefix` of three simulated nodes, a controller replica and instance `db`
/// (VIP 192.0.2.44) online on the first node.
async fn cluster_with_db(
    ns: &TestNamespace,
    prefix: &str,
) -> (Vec<String>, Replica, Api<FailoverClusterInstance>) {
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, prefix, 3, json!({})).await;
    let replica = Replica::start(&ns.name, prefix, false);
    let mut fci = instance("db", prefix, &nodes[..1], None).unwrap();
    fci.spec.virtual_ips = vec!["192.0.2.44".into()];
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on the first node",
        |i: Option<&FailoverClusterInstance>| online_owner(i).as_deref() == Some(&nodes[0]),
    )
    .await;
    cluster_status_of(&client, prefix, 3, &nodes[0]).await;
    (nodes, replica, fcis)
}

/// What a test looks through: the dashboard, chromedriver and a browser on its page.
struct Browser {
    page: Client,
    _dashboard: Killed,
    _chromedriver: Killed,
    _profile: tempfile::TempDir,
}

/// `kubectl failover dashboard --address 127.0.0.1:0 ARGS`, and a browser on its page.
async fn open_dashboard(args: &[&str]) -> Browser {
    let (dashboard, url) = start_dashboard(&[&["--address", "127.0.0.1:0"][..], args].concat());
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with('/') && !url.ends_with(":0/"),
        "{url}"
    );
    let (chromedriver, port) = start_chromedriver();
    let profile = tempfile::tempdir().unwrap();
    let page = browser(port, profile.path()).await;
    page.goto(&url).await.unwrap();
    Browser {
        page,
        _dashboard: dashboard,
        _chromedriver: chromedriver,
        _profile: profile,
    }
}

/// The page shows the instance online on its owner, then, when the owner's heartbeats
/// stop, the failover step by step as it happens and the instance online on the new owner;
/// the timeline goes back to where it was before and during the move. Without
/// `--allow-actions` the page has no buttons and the action endpoints answer 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_a_failover_as_it_happens_in_a_browser() {
    let ns = TestNamespace::new("dash").await;
    let (nodes, _replica, fcis) = cluster_with_db(&ns, "dash").await;
    let browser = open_dashboard(&["-n", &ns.name]).await;
    let page = &browser.page;

    let key = format!("{}/db", ns.name);
    let (n0, k) = (nodes[0].as_str(), key.as_str());
    let shown = until(
        page,
        "the instance online on its owner",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == n0 && v[1] == "Online" && v[2] == false,
    )
    .await;
    println!("before: {shown}");
    // Read by scripts, each in one call: the page redraws as events arrive, and an element
    // found a moment before may be gone by the time it is read.
    let text = inner_text(page, r#".cluster[data-cluster="dash"]"#).await;
    assert!(
        text.contains("Quorum: 3 of 3 members up, 2 required: 1 more may fail"),
        "{text}"
    );
    assert!(text.contains("192.0.2.44"), "the VIP: {text}");
    for node in &nodes {
        let state = page.execute(MEMBER_STATE, vec![json!(node)]).await.unwrap();
        assert_eq!(state, json!("Up"), "{node}");
    }
    let hb = inner_text(page, &format!(r#".member[data-node="{n0}"] .hb"#)).await;
    assert!(hb.starts_with("heartbeat ") && hb.ends_with(" ago"), "{hb}");

    // Read-only: no buttons, and the action endpoints refuse, even from the page itself.
    assert!(
        page.find_all(Locator::Css("button[data-act]"))
            .await
            .unwrap()
            .is_empty()
    );
    let body = json!({"namespace": ns.name, "instance": "db", "node": n0});
    for action in ["/api/move", "/api/drain", "/api/resume"] {
        let status = post_without_token(page, action, body.clone()).await;
        assert_eq!(status, 403, "{action}");
    }

    // The owner dies.
    let killed = Instant::now();
    control_plane().nodes.kill(n0).await.unwrap();
    let moved = until(
        page,
        "the instance online on a new owner",
        FAILOVER_SHOWN,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0].is_string() && v[0] != n0 && v[1] == "Online",
    )
    .await;
    let to = moved[0].as_str().unwrap().to_string();
    println!(
        "the page showed {k} online on {to} {:.1} s after the heartbeats of {n0} stopped",
        killed.elapsed().as_secs_f64()
    );
    let api_owner = wait_for(
        fcis.clone(),
        "db",
        T,
        "online elsewhere",
        |i: Option<&FailoverClusterInstance>| online_owner(i).is_some_and(|n| n != n0),
    )
    .await;
    assert_eq!(online_owner(Some(&api_owner)).as_deref(), Some(to.as_str()));
    until(
        page,
        "the old owner down or fenced",
        T,
        MEMBER_STATE,
        vec![json!(n0)],
        |v| v == "Down" || v == "Fenced",
    )
    .await;

    // The failover in the timeline, every step of it, as `history` has them.
    let failover = until(
        page,
        "the failover in the timeline",
        T,
        TIMELINE_MOVE,
        vec![json!(k), json!("failover")],
        |v| v["steps"].as_array().and_then(|s| s.last()) == Some(&json!("online")),
    )
    .await;
    println!("{failover}");
    let heading = failover["heading"].as_str().unwrap();
    assert!(
        heading.contains(&format!("failover from {n0} to {to} (NodeDown")),
        "{heading}"
    );
    let steps = [
        "started",
        "endpointWithdrawn",
        "fenced",
        "oldPodGone",
        "volumesDetached",
        "podCreated",
        "online",
    ];
    assert_eq!(failover["steps"], json!(steps));

    // As it happened: each step arrived as the controller recorded it, over several
    // snapshots (the move was on the page while in progress), in order.
    let log = page
        .execute(
            "return Array.from(document.querySelectorAll('#live-log li'))
                .filter((li) => li.dataset.move === arguments[0])
                .reverse()
                .map((li) => [li.dataset.step, Number(li.dataset.seq)])",
            vec![failover["id"].clone()],
        )
        .await
        .unwrap();
    println!("as it happened: {log}");
    let logged: Vec<(String, u64)> = serde_json::from_value(log).unwrap();
    let logged_steps: Vec<&str> = logged.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(logged_steps, steps, "every step, in order, as it came");
    let mut snapshots: Vec<u64> = logged.iter().map(|(_, seq)| *seq).collect();
    assert!(snapshots.is_sorted(), "{snapshots:?}");
    snapshots.dedup();
    assert!(
        snapshots.len() >= 2,
        "the steps came one snapshot after another, not all at once: {logged:?}"
    );

    let artifacts = artifacts_dir();
    std::fs::create_dir_all(&artifacts).unwrap();
    let png = page.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(artifacts.join("dashboard.png"), &png).unwrap();

    // Back in time: a click on the placement's last step shows the instance online on its
    // first owner, drawn as the past.
    let placement = until(
        page,
        "the placement in the timeline",
        T,
        TIMELINE_MOVE,
        vec![json!(k), json!("placement")],
        |v| v.is_object(),
    )
    .await;
    assert_eq!(
        placement["steps"].as_array().unwrap().last(),
        Some(&json!("online"))
    );
    click(
        page,
        &format!(
            r#"#moves .move[data-kind="placement"] button.step[data-index="{}"]"#,
            placement["indexes"].as_array().unwrap().last().unwrap()
        ),
    )
    .await;
    until(
        page,
        "the instance on its first owner, in the past",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == n0 && v[1] == "Online" && v[2] == true,
    )
    .await;
    let label = page.find(Locator::Id("scrub-label")).await.unwrap();
    assert_eq!(
        label.attr("data-live").await.unwrap().as_deref(),
        Some("false")
    );

    // The slider, step by step with the keyboard, to the old owner's fencing: the move is
    // in progress there, the instance still drawn on the old owner.
    let at = placement["indexes"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_u64()
        .unwrap();
    let fenced = failover["indexes"][2].as_u64().unwrap();
    let slider = page.find(Locator::Id("scrub")).await.unwrap();
    for _ in at..fenced {
        slider
            .send_keys(&fantoccini::key::Key::Right.to_string())
            .await
            .unwrap();
    }
    until(
        page,
        "the move in progress at the fencing",
        T,
        "return Array.from(document.querySelectorAll('#moving .move'))
            .filter((m) => m.dataset.move === arguments[0])
            .map((m) => Array.from(m.querySelectorAll('li[data-step]')).map((li) => li.dataset.step))[0] ?? null",
        vec![failover["id"].clone()],
        |v| *v == json!(&steps[..3]),
    )
    .await;
    let during = page.execute(WHERE_IS, vec![json!(k)]).await.unwrap();
    assert_eq!(during, json!([n0, "Moving", true]));
    let png = page.screenshot().await.unwrap();
    std::fs::write(artifacts.join("dashboard-scrubbed.png"), &png).unwrap();

    // And back to live.
    click(page, "#live").await;
    until(
        page,
        "the instance on its new owner, live",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == to.as_str() && v[1] == "Online" && v[2] == false,
    )
    .await;
    page.clone().close().await.unwrap();
}

/// With `--allow-actions` the page's buttons run the verbs: a planned move to the node
/// chosen, a drain that moves the instance off its node and pauses it, and a resume with
/// failback that brings the instance back. A request without the page's token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_allow_actions_the_page_moves_drains_and_resumes() {
    let ns = TestNamespace::new("dash-act").await;
    let (nodes, _replica, fcis) = cluster_with_db(&ns, "dashact").await;
    let browser = open_dashboard(&["-n", &ns.name, "--allow-actions"]).await;
    let page = &browser.page;
    let key = format!("{}/db", ns.name);
    let (k, n0, n2) = (key.as_str(), nodes[0].as_str(), nodes[2].as_str());
    until(
        page,
        "the instance online on its owner",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == n0 && v[1] == "Online",
    )
    .await;
    let status = post_without_token(page, "/api/drain", json!({"node": n0})).await;
    assert_eq!(status, 403, "no token, no action");

    // Move… to the third node.
    click(
        page,
        &format!(r#".instance[data-key="{k}"] button[data-act="move"]"#),
    )
    .await;
    page.find(Locator::Id("act-to"))
        .await
        .unwrap()
        .select_by_value(n2)
        .await
        .unwrap();
    click(page, "#act-ok").await;
    let said = until(
        page,
        "the move requested",
        T,
        TOAST,
        vec![],
        Value::is_string,
    )
    .await;
    assert_eq!(said, format!("{k}: move from {n0} to {n2} requested"));
    until(
        page,
        "the instance online on the node chosen",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == n2 && v[1] == "Online",
    )
    .await;
    let st = fcis.get("db").await.unwrap().status.unwrap();
    assert_eq!(st.owner_node.as_deref(), Some(n2));
    assert!(st.moved_by_operator, "the operator's move");

    // Drain it: the instance goes elsewhere, the node is paused.
    click(
        page,
        &format!(r#".member[data-node="{n2}"] button[data-act="drain"]"#),
    )
    .await;
    click(page, "#act-ok").await;
    let said = until(page, "the drain started", T, TOAST, vec![], |v| {
        v.as_str().is_some_and(|t| t.contains("cordoned"))
    })
    .await;
    assert_eq!(
        said,
        format!(
            "node/{n2} cordoned; moving 1 instance(s) off, higher priority first: {k} (Medium)"
        )
    );
    until(
        page,
        "the instance moved off the drained node",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0].is_string() && v[0] != n2 && v[1] == "Online",
    )
    .await;
    until(
        page,
        "the drained node paused",
        T,
        MEMBER_STATE,
        vec![json!(n2)],
        |v| v == "Paused",
    )
    .await;

    // Resume it with failback: the instance comes back.
    click(
        page,
        &format!(r#".member[data-node="{n2}"] button[data-act="failback"]"#),
    )
    .await;
    click(page, "#act-ok").await;
    let said = until(page, "the resume", T, TOAST, vec![], |v| {
        v.as_str().is_some_and(|t| t.contains("resumed"))
    })
    .await;
    assert_eq!(
        said,
        format!("node/{n2} resumed: it may host instances again\n{k}: failback to {n2} requested")
    );
    until(
        page,
        "the instance back on the resumed node",
        T,
        WHERE_IS,
        vec![json!(k)],
        |v| v[0] == n2 && v[1] == "Online",
    )
    .await;
    until(
        page,
        "the node up again",
        T,
        MEMBER_STATE,
        vec![json!(n2)],
        |v| v == "Up",
    )
    .await;
    assert_eq!(
        online_owner(Some(&fcis.get("db").await.unwrap())).as_deref(),
        Some(n2)
    );
    page.clone().close().await.unwrap();
}
