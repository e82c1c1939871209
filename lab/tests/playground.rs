//! `kube-failover-lab playground` and `node`, as a user runs them: the playground as a
//! process of the built binary, its printed kubeconfig, nodes killed and revived from
//! another process, a clean stop on SIGINT.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use kube::Client;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, MemberState, Phase};
use kube_failover_lab::controlplane::default_tools_bin;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

const LAB: &str = env!("CARGO_BIN_EXE_kube-failover-lab");

/// The playground's process; SIGKILLed if the test ends without stopping it (its control
/// plane's watchdog then takes the rest down).
struct Playground(Child);

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn node(dir: &Path, args: &[&str]) -> Output {
    Command::new(LAB)
        .arg("node")
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The state of `member` in the playground's cluster.
fn member_state(c: Option<&FailoverCluster>, member: &str) -> Option<MemberState> {
    c?.status
        .as_ref()?
        .members
        .iter()
        .find(|m| m.name == member)
        .map(|m| m.state)
}

async fn wait_cluster(
    api: &Api<FailoverCluster>,
    what: &str,
    cond: impl Fn(Option<&FailoverCluster>) -> bool,
) {
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(api.clone(), "playground", cond),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: not within 120 s"))
    .unwrap();
}

async fn wait_fci(
    api: &Api<FailoverClusterInstance>,
    name: &str,
    what: &str,
    cond: impl Fn(Option<&FailoverClusterInstance>) -> bool,
) {
    tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(api.clone(), name, cond),
    )
    .await
    .unwrap_or_else(|_| panic!("{name} {what}: not within 120 s"))
    .unwrap();
}

#[tokio::test]
async fn playground_runs_kills_and_revives_nodes_and_stops_cleanly() {
    let started = std::time::Instant::now();
    let dir = tempfile::Builder::new()
        .prefix("playground-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let dir = dir.path().to_path_buf();

    // No playground yet: `node` says so and fails.
    let none = node(&dir, &["list"]);
    assert!(
        !none.status.success()
            && String::from_utf8_lossy(&none.stderr).contains("no playground is running"),
        "{}",
        text(&none)
    );

    let mut child = Command::new(LAB)
        .args(["playground", "--nodes", "3", "--dir"])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut playground = Playground(child);

    // The printed kubeconfig; the rest of the output is echoed.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            eprintln!("[playground] {line}");
            if let Some(path) = line.trim().strip_prefix("export KUBECONFIG=")
                && !sent
            {
                sent = true;
                let _ = tx.send(PathBuf::from(path));
            }
        }
    });
    let kubeconfig = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(300)))
        .await
        .unwrap()
        .expect("the playground printed no `export KUBECONFIG=` line within 300 s");
    let config = kube::Config::from_custom_kubeconfig(
        kube::config::Kubeconfig::read_from(&kubeconfig).unwrap(),
        &Default::default(),
    )
    .await
    .unwrap();
    let api_port = config.cluster_url.port_u16().unwrap();
    assert_eq!(config.default_namespace, "playground");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&kubeconfig).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o777,
            0o600,
            "the admin kubeconfig is its owner's only"
        );
    }
    let client = Client::try_from(config).unwrap();
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("playground.json")).unwrap())
            .unwrap();
    let group = Pid::from_raw(i32::try_from(state["process_group"].as_i64().unwrap()).unwrap());

    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_cluster(&clusters, "three members Up", |c| {
        ["node-0", "node-1", "node-2"]
            .iter()
            .all(|n| member_state(c, n) == Some(MemberState::Up))
    })
    .await;
    eprintln!(
        "three members Up after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The example's instances, applied as a user would, come online.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/playground.yaml");
    let applied = Command::new(default_tools_bin().unwrap().join("kubectl"))
        .env("KUBECONFIG", &kubeconfig)
        .arg("apply")
        .arg("-f")
        .arg(&example)
        .output()
        .unwrap();
    assert!(applied.status.success(), "{}", text(&applied));
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), "playground");
    let owner_of = |i: Option<&FailoverClusterInstance>| -> Option<String> {
        let s = i?.status.as_ref()?;
        let online = s.phase == Phase::Online
            && s.current_move.is_none()
            && s.served.as_ref().is_some_and(|v| v.endpoint.is_some());
        online.then(|| s.owner_node.clone()).flatten()
    };
    for name in ["db", "web"] {
        wait_fci(&fcis, name, "online", move |i| owner_of(i).is_some()).await;
    }
    let db = fcis.get("db").await.unwrap();
    let owner = owner_of(Some(&db)).unwrap();
    assert_eq!(owner, "node-0", "db's first preferred owner");

    // Its owner loses power: the member goes Down (then Fenced) and db fails over.
    let killed = node(&dir, &["kill", &owner]);
    assert!(
        killed.status.success()
            && String::from_utf8_lossy(&killed.stdout).contains(&format!("{owner} killed")),
        "{}",
        text(&killed)
    );
    wait_cluster(&clusters, "the owner not Up after the kill", |c| {
        matches!(
            member_state(c, &owner),
            Some(MemberState::Down | MemberState::Fenced)
        )
    })
    .await;
    eprintln!(
        "{owner} not Up after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let list = node(&dir, &["list"]);
    let listed = String::from_utf8_lossy(&list.stdout);
    assert!(
        list.status.success()
            && listed
                .lines()
                .any(|l| l.starts_with(&format!("{owner} ")) && l.contains("killed"))
            && listed
                .lines()
                .any(|l| l.starts_with("node-1 ") && l.contains(" on ")),
        "{}",
        text(&list)
    );
    let moved = owner.clone();
    wait_fci(&fcis, "db", "online on another node", move |i| {
        owner_of(i).is_some_and(|o| o != moved)
    })
    .await;

    eprintln!(
        "db online elsewhere after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let revived = node(&dir, &["revive", &owner]);
    assert!(
        revived.status.success()
            && String::from_utf8_lossy(&revived.stdout).contains(&format!("{owner} revived")),
        "{}",
        text(&revived)
    );
    wait_cluster(&clusters, "the old owner Up again after the revival", |c| {
        member_state(c, &owner) == Some(MemberState::Up)
    })
    .await;
    eprintln!(
        "{owner} Up again after {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let again = node(&dir, &["revive", &owner]);
    assert!(
        again.status.success()
            && String::from_utf8_lossy(&again.stdout).contains("is already running"),
        "{}",
        text(&again)
    );

    let nosuch = node(&dir, &["kill", "nosuch"]);
    assert!(
        !nosuch.status.success()
            && String::from_utf8_lossy(&nosuch.stderr).contains(
                "no node \"nosuch\" in the playground; its nodes are node-0, node-1, node-2"
            ),
        "{}",
        text(&nosuch)
    );

    // SIGINT, as Ctrl-C: a clean exit, every process of its group gone, the API server's
    // port closed, nothing left in the state directory but the control plane's logs.
    kill(
        Pid::from_raw(i32::try_from(playground.0.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    let mut child = std::mem::replace(&mut playground.0, Command::new("true").spawn().unwrap());
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the playground exited with {status}");
    assert_eq!(
        killpg(group, None),
        Err(nix::errno::Errno::ESRCH),
        "a process of the playground's group is still there"
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", api_port)).is_err(),
        "the API server's port {api_port} is still open"
    );
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["controlplane"]);
    let after = node(&dir, &["kill", "node-0"]);
    assert!(
        !after.status.success()
            && String::from_utf8_lossy(&after.stderr).contains("no playground is running"),
        "{}",
        text(&after)
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
