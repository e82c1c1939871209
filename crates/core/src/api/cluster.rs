use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A failover cluster: the nodes that may host instances, how their health is judged, the
/// quorum guard and how a failed node is fenced.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-failover.io",
    version = "v1alpha1",
    kind = "FailoverCluster",
    shortname = "fc",
    status = "FailoverClusterStatus",
    printcolumn = r#"{"name":"Votes","type":"integer","jsonPath":".status.quorum.total"}"#,
    printcolumn = r#"{"name":"Heard","type":"integer","jsonPath":".status.quorum.healthy"}"#,
    printcolumn = r#"{"name":"Quorum","type":"string","jsonPath":".status.conditions[?(@.type==\"Quorum\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct FailoverClusterSpec {
    /// Labels that select the member nodes. Empty selects every node but the control plane's:
    /// a node labelled `node-role.kubernetes.io/control-plane` (or `.../master`) is a member
    /// only when this selector names that label.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// The namespaces whose instances may use this cluster, that is run pods on its members.
    /// None unless listed here: a cluster is opened to tenants explicitly.
    #[serde(default)]
    pub allowed_namespaces: AllowedNamespaces,
    /// When a member node counts as down.
    #[serde(default)]
    pub heartbeat: Heartbeat,
    /// The guard against failing over from the wrong side of a partition.
    #[serde(default)]
    pub quorum: Quorum,
    /// How a failed owner is fenced before its storage moves.
    #[serde(default)]
    pub fencing: Fencing,
    /// The address ranges this cluster's instances may use as virtual IPs, each open to
    /// every namespace the cluster allows or only to some. An instance's virtual IP outside
    /// every pool its namespace may use is never served (no Service, no agent, no status),
    /// and its instance says so (condition `NetworkName`, reason `VirtualIPNotAllowed`).
    /// No pool: no virtual IPs. Whatever a pool says, a node's address, an address of the
    /// cluster's Service or pod ranges, loopback, link-local, multicast, unspecified and
    /// broadcast addresses are never served.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("addressPools: each pool needs a name of its own"))]
    pub address_pools: Vec<AddressPool>,
    /// The DNS zones that an instance's `networkName.externalHostname` may lie in (the
    /// zone itself or a name under it), each open to every namespace the cluster allows or
    /// only to some. A hostname outside them is never published (condition `NetworkName`,
    /// reason `HostnameNotAllowed`). No zone: no external hostnames.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub dns_zones: Vec<DnsZone>,
    /// Anti-affinity classes shared across namespaces. An instance's
    /// `antiAffinityClasses` keep it off the nodes of the instances of its own namespace
    /// that name the same class; a class listed here also counts between the instances of
    /// every namespace it grants (absent `namespaces`: every namespace the cluster allows).
    /// Another namespace's instances are never named in an instance's status, only
    /// counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("antiAffinityClasses: each class is listed once"))]
    pub anti_affinity_classes: Vec<SharedClass>,
    /// Sites (Windows Server Failover Clustering's fault domains): members grouped by a node
    /// label. An instance fails over within its site when a member there can take it, and
    /// across sites only when none can; members whose heartbeats cross sites to reach the
    /// control plane may be given a longer threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sites: Option<Sites>,
    /// Quarantine of members that keep failing (WSFC's compute resiliency).
    #[serde(default)]
    pub quarantine: Quarantine,
}

/// A member that failed (went Down or was fenced) `threshold` times within `periodSeconds`
/// is quarantined for `durationSeconds`: no instance is placed on it, failed over to it or
/// failed back to it (what runs there stays). At most a quarter of the members (rounded
/// down) are quarantined at once. `kubectl failover resume --clear-quarantine NODE` lifts
/// it early. WSFC's defaults: 3 failures in an hour, 2 hours.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Quarantine {
    /// Failures within `periodSeconds` that quarantine a member. Default 3; 0: never.
    #[serde(default = "default_quarantine_threshold")]
    #[schemars(range(max = 100))]
    pub threshold: u32,
    /// Default 3600 (an hour).
    #[serde(default = "default_quarantine_period")]
    #[schemars(range(min = 1, max = 604800))]
    pub period_seconds: u32,
    /// How long a quarantine lasts. Default 7200 (two hours).
    #[serde(default = "default_quarantine_duration")]
    #[schemars(range(min = 1, max = 604800))]
    pub duration_seconds: u32,
}

fn default_quarantine_threshold() -> u32 {
    3
}
fn default_quarantine_period() -> u32 {
    3600
}
fn default_quarantine_duration() -> u32 {
    7200
}

impl Default for Quarantine {
    fn default() -> Self {
        Self {
            threshold: default_quarantine_threshold(),
            period_seconds: default_quarantine_period(),
            duration_seconds: default_quarantine_duration(),
        }
    }
}

/// On a Node, set by `kubectl failover resume --clear-quarantine`: the time of the request.
/// A quarantine that began before it is lifted.
pub const CLEAR_QUARANTINE_ANNOTATION: &str = "kube-failover.io/clear-quarantine";

/// See [`FailoverClusterSpec::sites`].
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.crossSiteLeaseStaleSeconds) || has(self.controlPlaneSite)").message("sites.crossSiteLeaseStaleSeconds applies to members outside sites.controlPlaneSite: name the control plane's site too"))]
pub struct Sites {
    /// The node label whose value names a member's site. Default
    /// `topology.kubernetes.io/zone`. A member without it is in no site: it is tried after
    /// the members of the instance's site, with those of the other sites.
    #[serde(default = "default_site_label")]
    #[schemars(length(min = 1, max = 317))]
    pub label: String,
    /// The site the control plane (the API server the heartbeats reach) is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub control_plane_site: Option<String>,
    /// Seconds without a Lease renewal before a member outside `controlPlaneSite` is down
    /// (WSFC's `CrossSiteThreshold`): its heartbeats cross a wider network. At least
    /// `heartbeat.leaseStaleSeconds` is used. Unset: the same threshold everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 3600))]
    pub cross_site_lease_stale_seconds: Option<u32>,
}

/// The label that names a node's zone, Kubernetes' well-known one.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

fn default_site_label() -> String {
    ZONE_LABEL.into()
}

impl Sites {
    /// The heartbeat settings that judge a member in `site`: the cross-site threshold for
    /// one outside the control plane's site.
    pub fn heartbeat_for(&self, heartbeat: &Heartbeat, site: Option<&str>) -> Heartbeat {
        let mut hb = heartbeat.clone();
        if let (Some(cp), Some(cross)) = (
            &self.control_plane_site,
            self.cross_site_lease_stale_seconds,
        ) && site != Some(cp.as_str())
        {
            hb.lease_stale_seconds = hb.lease_stale_seconds.max(cross);
        }
        hb
    }
}

/// A range of virtual IPs, and who may use it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AddressPool {
    /// The pool's name, as messages and status name it.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Address ranges in CIDR notation, IPv4 or IPv6: `192.0.2.0/28`, `2001:db8:1::/120`.
    #[schemars(length(min = 1, max = 16), inner(length(max = 49)))]
    #[x_kube(validation = Rule::new("self.all(c, isCIDR(c) && cidr(c) == cidr(c).masked())").message("each cidrs entry must be a network in CIDR notation with no host bits set, such as 192.0.2.0/28 or 2001:db8::/120"))]
    pub cidrs: Vec<String>,
    /// The namespaces that may take addresses from this pool (by name or by labels, as
    /// `allowedNamespaces`). Absent: every namespace the cluster allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceGrant>,
}

/// An anti-affinity class that counts across namespaces, and between which.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SharedClass {
    /// The class, as instances name it in `antiAffinityClasses`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The namespaces whose instances share it. Absent: every namespace the cluster allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceGrant>,
}

/// A DNS zone for external hostnames, and who may use it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DnsZone {
    /// The zone, such as `db.example.com`: the zone itself and every name under it.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub zone: String,
    /// The namespaces that may use it. Absent: every namespace the cluster allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceGrant>,
}

/// The namespaces granted a pool or a zone: those `names` lists and those whose labels
/// match `selector` (`{}` matches every one). A selector that cannot be parsed grants
/// nothing. Unlike `allowedNamespaces`, not checked at admission beyond its shape: the
/// check's cost, once per pool, would exceed what the API server allows a CRD.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NamespaceGrant {
    /// Namespaces granted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 63)))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
    /// Namespaces granted by their labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl NamespaceGrant {
    /// Whether the namespace `name`, with `labels`, is granted.
    pub fn allows(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        AllowedNamespaces {
            names: self.names.clone(),
            selector: self.selector.clone(),
        }
        .allows(name, labels)
    }
}

/// Which namespaces may place instances on a cluster. A namespace is allowed when `names`
/// lists it or its labels match `selector`; with neither, no namespace is. `selector: {}`
/// matches every namespace. Checked at admission (the chart's ValidatingAdmissionPolicy) and
/// again by the controller, which holds an instance whose namespace is not, or no longer,
/// allowed (condition `Valid=False`, reason `NamespaceNotAllowed`) without touching what runs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.selector) || !has(self.selector.matchExpressions) || self.selector.matchExpressions.all(e, e.operator in ['In', 'NotIn', 'Exists', 'DoesNotExist'] && ((e.operator in ['In', 'NotIn']) == (has(e.values) && size(e.values) > 0)))").message("allowedNamespaces.selector.matchExpressions: operator must be In, NotIn, Exists or DoesNotExist; In and NotIn need values, Exists and DoesNotExist take none"))]
pub struct AllowedNamespaces {
    /// Namespaces allowed by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 256),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub names: Vec<String>,
    /// Namespaces allowed by their labels. `{}` selects every namespace; `null` none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

impl AllowedNamespaces {
    /// Whether the namespace `name`, with `labels`, may use the cluster. A selector that
    /// cannot be parsed (admission refuses those) allows nothing.
    pub fn allows(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        use kube::core::{Selector, SelectorExt};
        self.names.iter().any(|n| n == name)
            || self
                .selector
                .clone()
                .is_some_and(|s| Selector::try_from(s).is_ok_and(|s| s.matches(labels)))
    }
}

/// Heartbeat thresholds. A member is down when its Lease in `kube-node-lease` has not been
/// renewed for `leaseStaleSeconds`, or its Ready condition has been False or Unknown for
/// `notReadySeconds`. Which Lease is `source`'s choice.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    /// Seconds without a Lease renewal before the node is down. A kubelet renews every
    /// 10 s by default, so the default of 20 s tolerates one missed renewal. Minimum 1.
    #[serde(default = "default_lease_stale")]
    #[schemars(range(min = 1, max = 3600))]
    pub lease_stale_seconds: u32,
    /// Seconds the Ready condition must stay False or Unknown before the node is down.
    /// Default 10. Minimum 1.
    #[serde(default = "default_not_ready")]
    #[schemars(range(min = 1, max = 3600))]
    pub not_ready_seconds: u32,
    /// How `leaseStaleSeconds` applies. A node is Down only when its kubelet's Lease is
    /// stale: the agent's Lease (`kube-failover-agent-<node>`, renewed every second where
    /// kube-failover's node agent runs) is a second heartbeat, never a replacement. An agent
    /// silent while its kubelet heartbeats is `AgentDown` (its own fault: never fenced,
    /// nothing moves); a silent kubelet whose agent renews is fenced only once the agent
    /// says it stopped the instance workloads there. `Kubelet` (default):
    /// `leaseStaleSeconds` judges both Leases. `Agent`: it judges the agent's Lease, and the
    /// kubelet's is judged with at least 20 s (a kubelet renews every 10 s), so that a few
    /// seconds can be set for the agent's without a slow kubelet renewal making a node
    /// Down.
    #[serde(default)]
    pub source: HeartbeatSource,
}

/// See `Heartbeat::source`.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum HeartbeatSource {
    #[default]
    Kubelet,
    Agent,
}

/// The least `leaseStaleSeconds` applied to a kubelet's Lease (renewed every 10 s) when the
/// cluster's heartbeat source is `Agent`.
pub const KUBELET_LEASE_STALE_FLOOR: u32 = 20;

fn default_lease_stale() -> u32 {
    20
}
fn default_not_ready() -> u32 {
    10
}

impl Default for Heartbeat {
    fn default() -> Self {
        Self {
            lease_stale_seconds: default_lease_stale(),
            not_ready_seconds: default_not_ready(),
            source: HeartbeatSource::Kubelet,
        }
    }
}

/// The quorum guard.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Quorum {
    /// How many votes must be heard for automatic failover: a count (`2`) or a percentage
    /// of the votes (`"51%"`, the default). Each member node votes (but those in
    /// `nonVotingNodes`), and so does the witness. Below it the controller fails nothing
    /// over, since it may itself be the one cut off.
    // Explicitly not nullable: kube marks every optional int-or-string field nullable,
    // which would let `minHealthy: null` be stored, and an `IntOrString` cannot be read
    // from null. Not nullable, the API server prunes a null and applies the default.
    #[serde(default = "default_min_healthy")]
    #[schemars(extend("nullable" = false))]
    #[x_kube(validation = Rule::new("type(self) == int ? self >= 0 : self.matches('^[0-9]{1,3}%$') && int(self.replace('%', '')) <= 100").message("minHealthy must be a count >= 0 or a percentage from 0% to 100%, like 51%"))]
    pub min_healthy: IntOrString,
    /// Members that do not vote (Windows Server Failover Clustering's `NodeWeight` 0): they
    /// host instances and are watched like any member, but the quorum counts neither them
    /// nor their absence. A name that is no member is ignored.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub non_voting_nodes: Vec<String>,
    /// A vote from outside the members, so that a cluster of two nodes can lose one and
    /// keep its quorum (two votes of three). `minHealthy` then counts votes: the voting
    /// members heard from, and the witness when it is heard from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<Witness>,
}

fn default_min_healthy() -> IntOrString {
    IntOrString::String("51%".into())
}

impl Default for Quorum {
    fn default() -> Self {
        Self {
            min_healthy: default_min_healthy(),
            non_voting_nodes: Vec::new(),
            witness: None,
        }
    }
}

/// The prefix of a witness Lease's name: it can never be a node's (kubelet) Lease nor a node
/// agent's (`kube-failover-agent-<node>`).
pub const WITNESS_LEASE_PREFIX: &str = "kube-failover-witness-";

/// What gives a cluster's witness vote: exactly one of `node`, `lease` and `apiServer`. The
/// vote counts while what it names is heard from, judged like a member's heartbeat (on the
/// controller's clock, with `heartbeat.leaseStaleSeconds`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.node) ? 1 : 0) + (has(self.lease) ? 1 : 0) + (has(self.apiServer) && self.apiServer ? 1 : 0) == 1").message("quorum.witness: name exactly one of node (a node that is not a member), lease (a Lease in kube-node-lease named kube-failover-witness-*) or apiServer: true"))]
pub struct Witness {
    /// A node that is not a member of this cluster (a control-plane node, or one in a third
    /// zone): its kubelet's Lease renewals are the vote. A member named here gives no vote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
    )]
    pub node: Option<String>,
    /// A Lease in `kube-node-lease`, named `kube-failover-witness-*`, that a witness process
    /// renews (`kube-failover witness`; the chart runs one with `witness.enabled`). Run it
    /// where the members' failures do not reach: another zone, the control plane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^kube-failover-witness-[a-z0-9]([-.a-z0-9]*[a-z0-9])?$')").message("quorum.witness.lease must be named kube-failover-witness-<name> (lower-case letters, digits, '-' and '.'): no node's or node agent's Lease can be a witness"))]
    pub lease: Option<String>,
    /// The API server itself: its vote counts while the controller hears the members'
    /// heartbeats through it, and only while every voting member runs the node agent with
    /// self-fencing (a member without one withholds the vote). See docs/safety.md.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub api_server: bool,
}

impl Witness {
    /// How messages and the status name it: `node cp-1`, `Lease kube-failover-witness-a`,
    /// `the API server`.
    pub fn describe(&self) -> String {
        match (&self.node, &self.lease) {
            (Some(n), _) => format!("node {n}"),
            (None, Some(l)) => format!("Lease {l}"),
            (None, None) => "the API server".into(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Fencing {
    /// `OutOfServiceTaint` (default): the controller taints the failed node with
    /// `node.kubernetes.io/out-of-service=nodeshutdown:NoExecute`, after which Kubernetes
    /// force-deletes its pods and detaches its volumes. `External`: wait until another
    /// fencer has tainted or deleted the node. `None`: do not fence; only for storage
    /// that is safe to attach twice.
    #[serde(default)]
    pub mode: FencingMode,
    /// Seconds to wait after a node is declared down before fencing it. Default 0. For a
    /// node whose agent fences itself (it announces `kube-failover.io/self-fence-seconds`:
    /// its self-fence time plus its stop timeout), the controller waits at least that long
    /// after the last renewal it saw, plus a margin of 1 s, whatever this says.
    #[serde(default)]
    #[schemars(range(max = 3600))]
    pub delay_seconds: u32,
    /// Seconds a fenced node must be seen healthy (its Lease renewed and Ready) before the
    /// controller removes the out-of-service taint it added. Default 60. Taints added by
    /// anyone else are never removed.
    #[serde(default = "default_unfence_after")]
    #[schemars(range(max = 86400))]
    pub unfence_after_seconds: u32,
}

fn default_unfence_after() -> u32 {
    60
}

impl Default for Fencing {
    fn default() -> Self {
        Self {
            mode: FencingMode::OutOfServiceTaint,
            delay_seconds: 0,
            unfence_after_seconds: default_unfence_after(),
        }
    }
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum FencingMode {
    #[default]
    OutOfServiceTaint,
    External,
    None,
}

/// What the controller sees of the cluster: its members' health and the quorum.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverClusterStatus {
    /// The `metadata.generation` of the spec this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Member nodes and their state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// Votes counted for the quorum: how many there are, how many are heard, how many
    /// automatic failover needs, and the witness.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<QuorumStatus>,
    /// `Ready` (the cluster's spec is valid and its members are known) and `Quorum`
    /// (enough healthy members for automatic failover), with a reason and a message each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The node's name.
    pub name: String,
    /// `Up`; `Down` (its heartbeats stopped, or it reports NotReady past the threshold);
    /// `Paused` (cordoned: keeps what it hosts, takes nothing new); `Fenced` (tainted
    /// out of service).
    pub state: MemberState,
    /// When the controller saw the node's Lease last renewed, on its own clock (never the
    /// node's renewTime, which comes from the node's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<Time>,
    /// Why the node is in this state, when it is not Up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many instances this node owns. A count, not their names: the status stays the
    /// same size however many instances there are (`kubectl failover status` lists them,
    /// from the instances' `status.ownerNode`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub instance_count: u32,
    /// The node agent, where one has a Lease: `Renewing`, or `Down` (silent for
    /// `heartbeat.leaseStaleSeconds`). An agent down while the kubelet heartbeats leaves the
    /// node `Up` with reason `AgentDown`: never fenced for it, and its virtual IPs are
    /// granted nowhere else until the agent is back or the node is fenced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<AgentState>,
    /// Listed in `quorum.nonVotingNodes`: the quorum does not count it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub non_voting: bool,
    /// Its site, when the cluster has sites (the value of `sites.label` on the node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// When it failed (went Down or was fenced) within `quarantine.periodSeconds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<Time>,
    /// Its quarantine, while it lasts: nothing is placed on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quarantine: Option<QuarantineStatus>,
}

/// A member's quarantine.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuarantineStatus {
    pub since: Time,
    pub until: Time,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentState {
    Renewing,
    Down,
}

#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberState {
    Up,
    Down,
    Paused,
    Fenced,
}

impl MemberState {
    /// Up or Paused: heartbeating and not fenced; counted for the quorum (a drained node
    /// still heartbeats, and its silence would be seen like any other's).
    pub fn heard(self) -> bool {
        matches!(self, MemberState::Up | MemberState::Paused)
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct QuorumStatus {
    /// Votes: the member nodes that vote, and the witness.
    pub total: u32,
    /// Votes heard: voting members that are Up or Paused, and the witness when heard from.
    pub healthy: u32,
    /// Votes needed for automatic failover.
    pub required: u32,
    /// The witness, when the cluster names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub witness: Option<WitnessStatus>,
}

/// The witness vote as the controller sees it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WitnessStatus {
    /// What gives the vote: `node cp-1`, `Lease kube-failover-witness-a`, `the API server`.
    pub name: String,
    /// Whether its vote counts now.
    pub heard: bool,
    /// Why it does not, when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
