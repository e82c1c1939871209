//! The chart's alert rules and Grafana dashboard: promtool checks the rule file the chart
//! ships and runs its unit tests (tests/alerts/, at least one series that fires each alert
//! and one that must not), every alert has its severity, annotations and a runbook section
//! in docs/operations.md, every metric the rules, the dashboard and the unit tests name is
//! one the controller exports, the dashboard's queries parse, and helm renders both, off by
//! default. On the real control plane, a failover shows in what a replica serves at
//! `/metrics` as the rules and the dashboard read it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kube::api::Api;
use kube_failover_controller::metrics::step_durations;
use kube_failover_core::api::{FENCED_AT_ANNOTATION, FailoverClusterInstance};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, create_instance, free_addr, http_get, is_online, status,
    wait_for,
};
use serde::Deserialize;
use serde_json::Value;

use common::{Run, helm_env, repo, tempdir, tools};

const T: Duration = Duration::from_secs(90);

const RULES: &str = "charts/kube-failover/files/alerts/kube-failover.rules.yaml";
const DASHBOARD: &str = "charts/kube-failover/files/dashboards/kube-failover.json";
const UNIT_TESTS: &str = "tests/alerts";
const RUNBOOK: &str = "docs/operations.md";

fn run(program: &Path, args: &[&str], dir: &Path, env: &[(&str, String)]) -> Run {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    Run::new(program, args, out)
}

fn promtool(args: &[&str]) -> Run {
    run(&tools().join("promtool"), args, &repo(), &[])
}

/// The pinned helm, with its configuration, cache and data in a directory of the tests.
fn helm(args: &[&str]) -> Run {
    run(
        &tools().join("helm"),
        args,
        &repo(),
        &helm_env("helm-home-alerts"),
    )
}

fn yaml_file(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// The alerting rules of the rule file, in order.
fn alert_rules() -> Vec<Value> {
    let file = yaml_file(&repo().join(RULES));
    let rules: Vec<Value> = file["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().clone())
        .collect();
    assert!(rules.iter().all(|r| r.get("alert").is_some()), "{rules:#?}");
    rules
}

fn alert_names() -> BTreeSet<String> {
    alert_rules()
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_string())
        .collect()
}

/// The promtool unit-test files, tests/alerts/*.yaml.
fn unit_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(UNIT_TESTS))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no unit tests in {UNIT_TESTS}");
    files
}

fn dashboard() -> Value {
    serde_json::from_str(&std::fs::read_to_string(repo().join(DASHBOARD)).unwrap()).unwrap()
}

/// Every `kube_failover_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    const PREFIX: &str = "kube_failover_";
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// The anchors of the headings of a Markdown page, as GitHub makes them.
fn anchors(markdown: &str) -> BTreeSet<String> {
    markdown
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect()
}

/// Every `expr` of the dashboard's panels (rows included), by panel title.
fn dashboard_queries(d: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or_default();
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((title.to_string(), t["expr"].as_str().unwrap().to_string()));
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&d["panels"], &mut out);
    out
}

#[test]
fn promtool_checks_the_rule_file_the_chart_ships() {
    let r = promtool(&["check", "rules", RULES]);
    assert!(r.ok, "{r}");
    let found = format!("SUCCESS: {} rules found", alert_rules().len());
    assert!(r.stdout.contains(&found), "expected {found:?}:\n{r}");
}

#[test]
fn every_alert_is_unit_tested_firing_and_not_firing_and_the_tests_pass() {
    let files = unit_test_files();
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    let mut args = vec!["test", "rules"];
    args.extend(names.iter().map(String::as_str));
    let r = promtool(&args);
    assert!(r.ok, "{r}");
    assert!(!r.stdout.contains("FAILED"), "{r}");

    let rules = repo().join(RULES).canonicalize().unwrap();
    let mut fired: BTreeSet<String> = BTreeSet::new();
    let mut held: BTreeSet<String> = BTreeSet::new();
    for file in &files {
        let tests = yaml_file(file);
        // The tests run on the chart's own rule file, not a copy.
        let rule_files = tests["rule_files"].as_array().unwrap();
        assert!(!rule_files.is_empty());
        for rf in rule_files {
            let path = file.parent().unwrap().join(rf.as_str().unwrap());
            assert_eq!(
                path.canonicalize().unwrap(),
                rules,
                "{} tests another rule file",
                file.display()
            );
        }
        for case in tests["tests"].as_array().unwrap() {
            for check in case["alert_rule_test"].as_array().into_iter().flatten() {
                let name = check["alertname"].as_str().unwrap().to_string();
                let expected = check["exp_alerts"].as_array().map_or(0, Vec::len);
                if expected == 0 {
                    held.insert(name);
                } else {
                    fired.insert(name);
                }
            }
        }
    }
    let alerts = alert_names();
    assert_eq!(fired, alerts, "alerts with a test that fires them");
    let not_held: Vec<&String> = alerts.difference(&held).collect();
    assert!(
        not_held.is_empty(),
        "alerts without a case that must not fire: {not_held:?}"
    );
}

#[test]
fn every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() {
    let docs = std::fs::read_to_string(repo().join(RUNBOOK)).unwrap();
    let sections = anchors(&docs);
    assert!(
        sections.contains("alerts"),
        "{RUNBOOK} has an Alerts section"
    );
    let rules = alert_rules();
    assert!(rules.len() >= 10, "{rules:#?}");
    for rule in &rules {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ),
            "{name}: severity critical or warning"
        );
        for annotation in ["summary", "description"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {annotation} {text:?}");
        }
        let runbook = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = name.to_lowercase();
        assert_eq!(
            runbook,
            format!("{RUNBOOK}#{anchor}"),
            "{name}: runbook_url names its section"
        );
        assert!(
            sections.contains(&anchor),
            "{RUNBOOK} has a section `### {name}`"
        );
    }
}

#[test]
fn every_metric_the_rules_the_dashboard_and_the_tests_name_is_exported() {
    let exported = kube_failover_controller::metrics::exported_names();
    let mut sources: BTreeMap<String, String> = BTreeMap::new();
    sources.insert(
        RULES.into(),
        std::fs::read_to_string(repo().join(RULES)).unwrap(),
    );
    sources.insert(
        DASHBOARD.into(),
        std::fs::read_to_string(repo().join(DASHBOARD)).unwrap(),
    );
    for f in unit_test_files() {
        sources.insert(
            f.display().to_string(),
            std::fs::read_to_string(&f).unwrap(),
        );
    }
    let mut named_anywhere = BTreeSet::new();
    for (source, text) in &sources {
        let named = metric_names(text);
        assert!(
            !named.is_empty(),
            "{source} names no kube_failover_* metric"
        );
        let unknown: Vec<&String> = named.difference(&exported).collect();
        assert!(
            unknown.is_empty(),
            "{source} names metrics the controller does not export: {unknown:?}\n\
             exported: {exported:#?}"
        );
        named_anywhere.extend(named);
    }
    // What the alerts and the panels are about is there.
    for family in [
        "kube_failover_moves_total",
        "kube_failover_move_step_duration_seconds_bucket",
        "kube_failover_quorum_votes_heard",
        "kube_failover_quorum_votes_required",
        "kube_failover_member_state",
        "kube_failover_member_agent_down",
        "kube_failover_cluster_resilient",
        "kube_failover_instances",
        "kube_failover_moving_since_timestamp_seconds",
        "kube_failover_unfence_due_timestamp_seconds",
        "kube_failover_leader",
    ] {
        assert!(named_anywhere.contains(family), "{family} is used");
    }
    // The scanner finds names in PromQL the way they are written there.
    assert_eq!(
        metric_names(
            r#"sum(rate(kube_failover_moves_total{kind="x"}[5m])) / kube_failover_leader"#
        ),
        BTreeSet::from([
            "kube_failover_moves_total".to_string(),
            "kube_failover_leader".to_string()
        ])
    );
}

#[test]
fn the_dashboards_queries_parse_and_its_panels_are_there() {
    let d = dashboard();
    assert_eq!(d["uid"], "kube-failover");
    let queries = dashboard_queries(&d);
    let titles: BTreeSet<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Failovers (planned and unplanned)",
        "Step duration, mean over the time range",
        "Step duration, 95th percentile",
        "Quorum margin",
        "Node states",
        "Instances by phase",
    ] {
        assert!(titles.contains(wanted), "panel {wanted:?} in {titles:?}");
    }
    // Panel ids are unique (Grafana keys its state by them).
    let mut ids = BTreeSet::new();
    fn collect_ids(panels: &Value, ids: &mut BTreeSet<i64>) {
        for p in panels.as_array().into_iter().flatten() {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "panel id {} twice",
                p["id"]
            );
            collect_ids(&p["panels"], ids);
        }
    }
    collect_ids(&d["panels"], &mut ids);

    // Each query, Grafana's variables filled in, as a recording rule: promtool parses it.
    let rules: Vec<Value> = queries
        .iter()
        .enumerate()
        .map(|(n, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$__range", "6h")
                .replace("$cluster", ".*")
                .replace("$kind", ".*");
            assert!(!expr.contains('$'), "a variable left in {expr}");
            serde_json::json!({"record": format!("dashboard:query_{n}"), "expr": expr})
        })
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempdir("dashboard-");
    let path = dir.path().join("dashboard.rules.yaml");
    std::fs::write(&path, serde_yaml::to_string(&file).unwrap()).unwrap();
    let r = promtool(&["check", "rules", &path.display().to_string()]);
    assert!(r.ok, "{r}");
    assert!(
        r.stdout
            .contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{r}"
    );
}

/// The documents of a YAML stream, as JSON values (empty documents skipped).
fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn dashboard_configmaps(docs: &[Value]) -> Vec<&Value> {
    of_kind(docs, "ConfigMap")
        .into_iter()
        .filter(|c| c["data"].get("kube-failover.json").is_some())
        .collect()
}

fn template(values: &[&str]) -> Vec<Value> {
    let chart = repo().join("charts/kube-failover").display().to_string();
    let args = [
        &["template", "kube-failover", &chart, "--namespace", "ha"][..],
        values,
    ]
    .concat();
    let r = helm(&args);
    assert!(r.ok, "{r}");
    docs(&r.stdout)
}

#[test]
fn helm_renders_the_rule_and_the_dashboard_only_when_enabled() {
    let off = template(&[]);
    assert!(of_kind(&off, "PrometheusRule").is_empty());
    assert!(dashboard_configmaps(&off).is_empty());

    let on = [
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=prometheus",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
    ];
    let chart = repo().join("charts/kube-failover").display().to_string();
    let lint = helm(&[&["lint", "--strict", &chart][..], &on].concat());
    assert!(
        lint.ok && lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
        "{lint}"
    );
    let rendered = template(&on);
    let rule = match of_kind(&rendered, "PrometheusRule").as_slice() {
        [one] => (*one).clone(),
        other => panic!("expected one PrometheusRule, got {}", other.len()),
    };
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["metadata"]["namespace"], "ha");
    assert_eq!(rule["metadata"]["labels"]["release"], "prometheus");
    // The rules are the file promtool checks, as they are.
    assert_eq!(rule["spec"], yaml_file(&repo().join(RULES)));

    let maps = dashboard_configmaps(&rendered);
    let [map] = maps.as_slice() else {
        panic!("expected one dashboard ConfigMap, got {}", maps.len());
    };
    assert_eq!(map["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(map["metadata"]["namespace"], "ha");
    let json: Value =
        serde_json::from_str(map["data"]["kube-failover.json"].as_str().unwrap()).unwrap();
    assert_eq!(json, dashboard(), "the dashboard is the chart's file");

    // The runbook links follow the published docs; the sidecar's label, namespace and
    // folder are the user's.
    let custom = template(&[
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.runbookBaseUrl=https://docs.example.com/kube-failover/v0.1.0/",
        "--set",
        "metrics.grafanaDashboard.enabled=true",
        "--set",
        "metrics.grafanaDashboard.label=dashboards",
        "--set-string",
        "metrics.grafanaDashboard.labelValue=kube-failover",
        "--set",
        "metrics.grafanaDashboard.namespace=monitoring",
        "--set",
        "metrics.grafanaDashboard.annotations.grafana_folder=Failover",
    ]);
    let rule = of_kind(&custom, "PrometheusRule")[0];
    let urls: Vec<&str> = rule["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["annotations"]["runbook_url"].as_str().unwrap())
        .collect();
    assert_eq!(urls.len(), alert_names().len());
    for url in urls {
        assert!(
            url.starts_with(
                "https://docs.example.com/kube-failover/v0.1.0/docs/operations.md#kubefailover"
            ),
            "{url}"
        );
    }
    let map = dashboard_configmaps(&custom)[0];
    assert_eq!(map["metadata"]["labels"]["dashboards"], "kube-failover");
    assert!(map["metadata"]["labels"].get("grafana_dashboard").is_none());
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["annotations"]["grafana_folder"], "Failover");
}

#[test]
fn values_schema_refuses_wrong_alert_and_dashboard_values() {
    let chart = repo().join("charts/kube-failover").display().to_string();
    let dir = tempdir("alert-values-");
    let refused = [
        (
            "metrics:\n  prometheusRule:\n    enabled: \"yes\"\n",
            "at '/metrics/prometheusRule/enabled': got string, want boolean",
        ),
        (
            "metrics:\n  prometheusrule:\n    enabled: true\n",
            "additional properties 'prometheusrule' not allowed",
        ),
        (
            "metrics:\n  grafanaDashboard:\n    labelValue: 1\n",
            "at '/metrics/grafanaDashboard/labelValue': got number, want string",
        ),
        (
            "metrics:\n  prometheusRule:\n    runbookBaseUrl: docs.example.com\n",
            "at '/metrics/prometheusRule/runbookBaseUrl'",
        ),
    ];
    for (n, (values, message)) in refused.iter().enumerate() {
        let file = dir.path().join(format!("values-{n}.yaml"));
        std::fs::write(&file, values).unwrap();
        let r = helm(&["template", "x", &chart, "-f", &file.display().to_string()]);
        assert!(!r.ok, "accepted {values:?}:\n{r}");
        assert!(
            r.stderr.contains(message),
            "for {values:?} expected {message:?}:\n{r}"
        );
    }
}

/// The samples a replica serves at `/metrics`, by series (`name{labels}`), once `ready` holds
/// of them.
async fn metrics_when(
    addr: std::net::SocketAddr,
    what: &str,
    ready: impl Fn(&BTreeMap<String, f64>) -> bool,
) -> BTreeMap<String, f64> {
    let deadline = Instant::now() + T;
    let mut last = BTreeMap::new();
    loop {
        if let Ok((200, text)) = http_get(addr, "/metrics").await {
            last = text
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let (series, value) = l.rsplit_once(' ')?;
                    Some((series.to_string(), value.parse().ok()?))
                })
                .collect();
            if ready(&last) {
                return last;
            }
        }
        assert!(Instant::now() < deadline, "{what} within {T:?}: {last:#?}");
        // Metrics are rendered when asked for: there is nothing to watch.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_failover_shows_in_the_metrics_as_the_alerts_and_the_dashboard_read_them() {
    let ns = TestNamespace::new("alerts").await;
    let client = ns.client.clone();
    // The dead node's taint may go an hour after it is back: long after this test.
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"fencing": {"unfenceAfterSeconds": 3600}}),
        )
        .await;
    let http = free_addr();
    let _replica = Replica::start_serving(&ns.name, "r1", false, Some(http));
    create_instance(&client, &ns.name, "db", &cluster, &nodes, None).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
    // The leader's per-cluster series: the votes, each member's state, and whether every
    // instance would have a place should one member fail (three up: yes).
    let votes = |what: &str| format!(r#"kube_failover_quorum_votes{what}{{cluster="{cluster}"}}"#);
    let resilient = format!(r#"kube_failover_cluster_resilient{{cluster="{cluster}"}}"#);
    let state = |node: &str, state: &str| {
        format!(
            r#"kube_failover_member_state{{cluster="{cluster}",node="{node}",state="{state}"}}"#
        )
    };
    let m = metrics_when(http, "three members up, resilient", |m| {
        m.get(&votes("_heard")) == Some(&3.0) && m.get(&resilient) == Some(&1.0)
    })
    .await;
    assert_eq!(m.get(&votes("")), Some(&3.0), "{m:#?}");
    assert_eq!(m.get(&votes("_required")), Some(&2.0), "{m:#?}");
    for node in &nodes {
        assert_eq!(m.get(&state(node, "Up")), Some(&1.0), "{m:#?}");
        assert_eq!(m.get(&state(node, "Fenced")), Some(&0.0), "{m:#?}");
    }

    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over and Online",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.is_some_and(|i| status(i).history.iter().any(|m| m.from.is_some()))
        },
    )
    .await;
    let history = status(&moved).history;
    let failover = history.iter().find(|m| m.from.is_some()).unwrap();
    let unplanned = format!(r#"kube_failover_moves_total{{cluster="{cluster}",kind="unplanned"}}"#);
    let fenced = format!(
        r#"kube_failover_fenced_since_timestamp_seconds{{node="{}"}}"#,
        nodes[0]
    );
    let m = metrics_when(http, "the failover counted, the dead node fenced", |m| {
        m.get(&unplanned) == Some(&1.0)
            && m.contains_key(&fenced)
            && m.get(&state(&nodes[0], "Fenced")) == Some(&1.0)
            && m.get(&resilient) == Some(&0.0)
    })
    .await;
    // Two of three left: one more failure would lose the quorum, so nothing is resilient.
    assert_eq!(m.get(&votes("_heard")), Some(&2.0), "{m:#?}");
    assert_eq!(m.get(&state(&nodes[0], "Up")), Some(&0.0), "{m:#?}");
    let placement = format!(r#"kube_failover_moves_total{{cluster="{cluster}",kind="placement"}}"#);
    assert_eq!(m.get(&placement), Some(&1.0), "{m:#?}");
    assert_eq!(
        m.get(r#"kube_failover_failovers_total{reason="NodeDown"}"#),
        Some(&1.0)
    );
    assert_eq!(m.get("kube_failover_leader"), Some(&1.0));
    assert_eq!(
        m.get(r#"kube_failover_instances{phase="Online"}"#),
        Some(&1.0)
    );
    assert!(
        !m.keys().any(|k| k.starts_with("kube_failover_moving_")),
        "no move in progress: {m:#?}"
    );
    // Each step of the failover, as its history entry times it, observed once.
    let steps = step_durations(failover);
    assert!(steps.iter().any(|(s, _)| *s == "Fence"), "{failover:?}");
    for (step, took) in steps {
        let labels = format!(r#"{{step="{step}",kind="unplanned"}}"#);
        let count = format!("kube_failover_move_step_duration_seconds_count{labels}");
        let sum = format!("kube_failover_move_step_duration_seconds_sum{labels}");
        assert_eq!(m.get(&count), Some(&1.0), "{count}: {m:#?}");
        assert!((m[&sum] - took).abs() < 1e-6, "{sum} = {took}: {m:#?}");
    }
    // The taint's time is the controller's annotation on the node.
    let node: k8s_openapi::api::core::v1::Node =
        Api::all(client.clone()).get(&nodes[0]).await.unwrap();
    let fenced_at: jiff::Timestamp = node.metadata.annotations.as_ref().unwrap()
        [FENCED_AT_ANNOTATION]
        .parse()
        .unwrap();
    let since = m[&fenced];
    assert!(
        (since - fenced_at.as_millisecond() as f64 / 1000.0).abs() < 0.001,
        "{since} vs {fenced_at}"
    );

    // The node is back: it may be unfenced an hour after it is Ready again, not before.
    control_plane().nodes.revive(&nodes[0]).await.unwrap();
    let due = format!(
        r#"kube_failover_unfence_due_timestamp_seconds{{node="{}"}}"#,
        nodes[0]
    );
    let m = metrics_when(http, "the unfence time of the node back", |m| {
        m.contains_key(&due)
    })
    .await;
    assert!(m[&due] >= since + 3600.0, "{m:#?}");
    assert_eq!(m.get(&fenced), Some(&since), "still fenced: {m:#?}");
}
