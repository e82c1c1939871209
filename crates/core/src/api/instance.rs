use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A failover cluster instance: a network name, virtual IPs, storage claims and a workload
/// that run together on exactly one node of a failover cluster and move together when it
/// fails.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kube-failover.io",
    version = "v1alpha1",
    kind = "FailoverClusterInstance",
    namespaced,
    shortname = "fci",
    status = "FailoverClusterInstanceStatus",
    printcolumn = r#"{"name":"Owner","type":"string","jsonPath":".status.ownerNode"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"VIP","type":"string","jsonPath":".status.served.virtualIPs[0]"}"#,
    printcolumn = r#"{"name":"Failovers","type":"integer","jsonPath":".status.failoverCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self.clusterRef == oldSelf.clusterRef").message("clusterRef is immutable: delete and recreate the instance to move it to another cluster"))]
#[x_kube(validation = Rule::new("self.networkName.name == oldSelf.networkName.name").message("networkName.name is immutable: clients know the instance by it; create a new instance instead"))]
#[x_kube(validation = Rule::new("!has(self.owners) || !has(self.owners.possible) || size(self.owners.possible) == 0 || !has(self.owners.preferred) || self.owners.preferred.all(n, n in self.owners.possible)").message("every owners.preferred node must also be listed in owners.possible when owners.possible is set"))]
#[serde(rename_all = "camelCase")]
pub struct FailoverClusterInstanceSpec {
    /// Name of the FailoverCluster whose nodes host this instance. Immutable.
    #[schemars(length(min = 1, max = 253))]
    pub cluster_ref: String,
    /// The name clients use: a Service of that name, without selector, whose
    /// EndpointSlice lists only the active pod.
    pub network_name: NetworkName,
    /// Virtual IP addresses (IPv4 or IPv6) of the network name, served from the owner node
    /// only. How they are announced is `vipMode`. Each must lie in an address pool of the
    /// cluster that this namespace may use (the cluster's `addressPools`), and be held by no
    /// other instance: the controller claims each address for this instance with an
    /// `IPAddress` object (`networking.k8s.io`), which the API server gives to one claimant
    /// only. An address not allowed or held by another is not served, and condition
    /// `NetworkName` says why.
    #[serde(default, rename = "virtualIPs", skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8), inner(length(max = 45)))]
    #[x_kube(validation = Rule::new("self.all(a, isIP(a) && ip(a).isGlobalUnicast() && string(ip(a)) == a)").message("each virtualIPs entry must be a unicast IPv4 or IPv6 address in its canonical form, such as 192.0.2.10 or 2001:db8::10 (not loopback, link-local, multicast, unspecified or broadcast; IPv6 in lower case, zeros compressed)"))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub virtual_ips: Vec<String>,
    /// How the virtual IPs reach clients. `ExternalIPs` (default, the behaviour of
    /// v1alpha1 so far): the Service lists them as `externalIPs`; something else must route
    /// them to the owner. `LoadBalancer`: the Service is of type LoadBalancer asking for
    /// them (`spec.loadBalancerIP` for a single address and the annotations MetalLB and
    /// kube-vip read), with `externalTrafficPolicy: Local`, so that an announcer answers
    /// from the node of the only ready endpoint, the owner. `Agent`: kube-failover's node
    /// agent brings them up on the owner's interface and announces them (gratuitous ARP,
    /// unsolicited neighbour advertisement); the Service is a plain ClusterIP one.
    #[serde(default, rename = "vipMode")]
    pub vip_mode: VipMode,
    /// Storage that moves with the instance.
    #[serde(default)]
    pub storage: Storage,
    /// The workload, run as exactly one pod pinned to the owner node. Its readiness probe
    /// is the health check. Each storage claim is added as a volume named after the claim;
    /// mount it with a volumeMount of that name.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub template: super::PodTemplate,
    /// Which nodes may own the instance, and in what order.
    #[serde(default)]
    pub owners: Owners,
    /// How many failovers are allowed within a period before the instance is left Failed.
    #[serde(default)]
    pub failover: FailoverPolicy,
    /// How many times the workload is restarted in place before the instance fails over.
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Whether and when the instance moves back to a more preferred owner that recovers.
    #[serde(default)]
    pub failback: Failback,
    /// The order in which instances come online when many move at once.
    #[serde(default)]
    pub priority: Priority,
    /// Anti-affinity classes (WSFC's AntiAffinityClassNames): instances of the same
    /// FailoverCluster and namespace that share a class keep off each other's nodes; across
    /// namespaces, only a class the cluster shares between them counts
    /// (`FailoverCluster.spec.antiAffinityClasses`), and another namespace's instance is
    /// never named in status.
    /// At placement, failover, failback and planned moves without a target, a node hosting
    /// one (or where one is moving) comes after every other eligible node; see
    /// `antiAffinityMode`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub anti_affinity_classes: Vec<String>,
    /// Instances in this namespace that must be Online before this one starts (an
    /// application after its database; WSFC's group sets, Pacemaker's order constraints).
    /// Kept at every start: placement, failover, planned moves and `update-run`. An instance
    /// already running is not stopped when one it depends on goes down. A dependency that
    /// does not exist, or a cycle, holds the instance's start and says so.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(
            length(min = 1, max = 253),
            regex(pattern = r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$")
        )
    )]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub depends_on: Vec<String>,
    /// `Preferred` (default): a shared node is used when no other eligible node is left, and
    /// the instance moves off it again when failback is allowed (`failback.mode`) and a
    /// free node is up. `Strict`: the instance never starts on a node that hosts one of its
    /// classes, and stays offline rather than share (WSFC's ClusterEnforcedAntiAffinity);
    /// should two still meet (both placed in the same instant), the one of lower priority
    /// (then later name) moves off as soon as a free node is up. A pair is strict when
    /// either instance says `Strict`.
    #[serde(default)]
    pub anti_affinity_mode: AntiAffinityMode,
}

/// How hard instances sharing an anti-affinity class avoid each other's nodes.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum AntiAffinityMode {
    #[default]
    Preferred,
    Strict,
}

/// The schema of the pod template is the API server's own PodTemplateSpec; embedding its
/// full OpenAPI here would make the CRD huge for no gain, since the API server validates
/// the pod that the controller creates from it.
fn preserve_unknown_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkName {
    /// A DNS label (RFC 1123): lower-case letters, digits and '-', at most 63 characters,
    /// starting with a letter. Also the name of the Service. Immutable.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Ports served on the network name.
    #[schemars(length(min = 1, max = 32))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub ports: Vec<NetworkPort>,
    /// Optional external DNS hostname, published as the `external-dns.alpha.kubernetes.io/hostname`
    /// annotation on the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub external_hostname: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPort {
    /// A DNS label naming the port.
    #[schemars(
        length(min = 1, max = 15),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// The port clients connect to on the network name (the Service port).
    #[schemars(range(min = 1, max = 65535))]
    pub port: u16,
    /// Port on the pod; defaults to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub target_port: Option<u16>,
    /// TCP (default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Protocol,
}

/// See `FailoverClusterInstanceSpec::vip_mode`.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum VipMode {
    #[default]
    ExternalIPs,
    LoadBalancer,
    Agent,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Protocol {
    #[default]
    TCP,
    UDP,
    SCTP,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Storage {
    /// Names of existing PersistentVolumeClaims in the instance's namespace. The controller
    /// mounts them and never deletes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub claims: Vec<String>,
    /// Claims the controller creates (named `<instance>-<name>`), keeps while the instance
    /// exists and deletes with it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub claim_templates: Vec<ClaimTemplate>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ClaimTemplate {
    /// Names the claim `<instance>-<name>`, and the pod volume that mounts it `<name>`.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// A PersistentVolumeClaim spec (accessModes, resources, storageClassName…), validated
    /// by the API server when the claim is created.
    #[schemars(schema_with = "preserve_unknown_object")]
    pub spec: PersistentVolumeClaimSpec,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Owners {
    /// Preferred owner nodes, most preferred first. The instance starts on the first
    /// healthy one and fails over down the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub preferred: Vec<String>,
    /// Nodes allowed to own the instance. Empty means every member of the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    #[schemars(extend("x-kubernetes-list-type" = "set"))]
    pub possible: Vec<String>,
    /// The site to run in (the cluster's `sites`): placed there, failed over within it, and
    /// moved elsewhere only when no member there can take it. Unset: the site of the node it
    /// fails over from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub preferred_site: Option<String>,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverPolicy {
    /// Failovers allowed within `periodSeconds`. Unset means member nodes − 1, as in
    /// WSFC. Past it the instance stays Failed until a person acts. Minimum 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub threshold: Option<u32>,
    /// Default 21600 (6 h).
    #[serde(default = "default_failover_period")]
    #[schemars(range(min = 1))]
    pub period_seconds: u32,
}

fn default_failover_period() -> u32 {
    6 * 3600
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            threshold: None,
            period_seconds: default_failover_period(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartPolicy {
    /// Restarts in place allowed within `periodSeconds` before failing over. Default 3.
    /// Minimum 1.
    #[serde(default = "default_restart_threshold")]
    #[schemars(range(min = 1, max = 1000))]
    pub threshold: u32,
    /// Default 900 (15 min).
    #[serde(default = "default_restart_period")]
    #[schemars(range(min = 1))]
    pub period_seconds: u32,
}

fn default_restart_threshold() -> u32 {
    3
}
fn default_restart_period() -> u32 {
    900
}

impl Default for RestartPolicy {
    fn default() -> Self {
        Self {
            threshold: default_restart_threshold(),
            period_seconds: default_restart_period(),
        }
    }
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'Window' ? (has(self.windowStartHour) && has(self.windowEndHour)) : (!has(self.windowStartHour) && !has(self.windowEndHour))").message("failback.windowStartHour and windowEndHour are required with mode Window and not allowed otherwise"))]
pub struct Failback {
    /// `Never` (default), `Immediate`, or `Window`: only between the hours below (UTC).
    #[serde(default)]
    pub mode: FailbackMode,
    /// With `mode: Window`: the hour (0–23, UTC) failback may begin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 23))]
    pub window_start_hour: Option<u8>,
    /// With `mode: Window`: the hour (0–23, UTC) failback must not begin after; may be less
    /// than the start hour for a window across midnight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 23))]
    pub window_end_hour: Option<u8>,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum FailbackMode {
    #[default]
    Never,
    Immediate,
    Window,
}

#[derive(
    schemars::JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
)]
pub enum Priority {
    High,
    #[default]
    Medium,
    Low,
    /// Never brought online automatically.
    NoAutoStart,
}

#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq,
)]
pub enum Phase {
    #[default]
    Pending,
    /// Serving on its owner: the pod is ready and its endpoint published.
    Online,
    /// Placed on its owner, but not serving: the pod is not ready (or is being recreated),
    /// so its endpoint is withdrawn. The owner keeps it (and, with `vipMode: Agent`, its
    /// virtual IPs) until it is ready again or the restart threshold moves it.
    Degraded,
    Moving,
    Offline,
    Failed,
    /// The controller cannot tell whether the owner serves: too few member nodes are up
    /// (`QuorumLost`), so it may be the one cut off. Nothing is moved or withdrawn.
    Unknown,
}

/// Where the instance runs, what it serves, and the moves that brought it there.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailoverClusterInstanceStatus {
    /// The `metadata.generation` of the spec this status was decided from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Online`, `Degraded` (on its owner, pod not ready, endpoint withdrawn),
    /// `Moving`, `Offline`, `Failed` or `Unknown`; the `Online` condition's reason and
    /// message say why.
    #[serde(default)]
    pub phase: Phase,
    /// The node that owns the instance (its pod runs there), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_node: Option<String>,
    /// `Online` (true when the instance serves on its owner; otherwise its reason says what
    /// it waits for) and `Ready` (the spec was accepted).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What clients reach: the DNS name, the virtual IPs, the endpoint behind them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served: Option<Served>,
    /// The move in progress: recorded before the first step so that any replica can carry
    /// it on from the first step not yet done.
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "move")]
    pub current_move: Option<Move>,
    /// The last moves, newest last (at most 10): placements, failovers and planned moves,
    /// each with its reason and the time of each step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Move>,
    /// `history`, one line per move: when it started (UTC), what it was, how long it took
    /// (`kubectl describe` runs the entries of `history` together; `kubectl failover
    /// history` shows every step).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history_summary: Vec<String>,
    /// Number of the latest move; the instance's pod of move N is named `<instance>-N`.
    #[serde(default)]
    pub move_seq: u64,
    /// The last `kube-failover.io/start-requested` value acted on, so that each request to
    /// start is acted on once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_request: Option<String>,
    /// The last `kube-failover.io/move-requested` value acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub move_request: Option<String>,
    /// The owner was chosen by an operator's move: failback leaves it there. Cleared by the
    /// next move of any other kind.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moved_by_operator: bool,
    /// Failovers counted against `failover.threshold` (within the period).
    #[serde(default)]
    pub failover_count: u32,
    /// When each failover within `failover.periodSeconds` started, oldest first: what
    /// `failover.threshold` counts, kept apart from the bounded history.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failovers: Vec<Time>,
    /// Restarts of the workload on its owner (within `restart.periodSeconds`), oldest first:
    /// container restarts by the kubelet and pods that failed, each counted once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restarts: Vec<Time>,
    /// The pod whose restarts are counted in `restarts`, and how far.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts_seen: Option<RestartsSeen>,
}

/// How much of one pod's restarts has been counted.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestartsSeen {
    /// The pod's UID.
    pub pod_uid: String,
    /// Container restarts of that pod already counted (the sum of its containers'
    /// `restartCount`).
    pub container_restarts: u32,
    /// Its failure (phase Failed) has been counted.
    pub failed: bool,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Served {
    /// The in-cluster DNS name of the network name.
    pub dns_name: String,
    /// The virtual IPs, as the Service carries them.
    #[serde(default, rename = "virtualIPs", skip_serializing_if = "Vec::is_empty")]
    pub virtual_ips: Vec<String>,
    /// Address of the active pod in the EndpointSlice, if published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// With `vipMode: Agent`, the one node whose agent may bring the virtual IPs up: the
    /// owner, once no other node's agent may still hold them. Unset during a move.
    #[serde(default, rename = "vipNode", skip_serializing_if = "Option::is_none")]
    pub vip_node: Option<String>,
}

/// One move of the instance, with the time each step was done (microsecond precision).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    /// The node the instance moved from (none for a first placement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The node it moved to, once chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// Why it moved: `Placement`, `NodeDown: <why>`, `RestartThresholdExceeded`,
    /// `Failback`…
    pub reason: String,
    /// A graceful move (placement, failback): the old pod was stopped with its grace
    /// period, no node was fenced.
    pub planned: bool,
    pub started: MicroTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_withdrawn: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fenced: Option<MicroTime>,
    /// With `vipMode: Agent`: when no node but the new owner could still hold the virtual
    /// IPs (the old owner's agent said it released them, or it had fenced itself).
    #[serde(
        default,
        rename = "vipReleased",
        skip_serializing_if = "Option::is_none"
    )]
    pub vip_released: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old_pod_gone: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes_detached: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_created: Option<MicroTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<MicroTime>,
}

impl Move {
    /// A move started at `started`, no step of it done yet.
    pub fn started(
        from: Option<String>,
        to: Option<String>,
        reason: &str,
        planned: bool,
        started: MicroTime,
    ) -> Self {
        Self {
            from,
            to,
            reason: reason.into(),
            planned,
            started,
            endpoint_withdrawn: None,
            fenced: None,
            vip_released: None,
            old_pod_gone: None,
            volumes_detached: None,
            pod_created: None,
            online: None,
        }
    }

    /// The steps of a move in the order of the failover sequence: the status field's name,
    /// how people read it, and when it was done (none: not, or not yet).
    pub fn steps(&self) -> [(&'static str, &'static str, Option<&MicroTime>); 8] {
        [
            ("started", "started", Some(&self.started)),
            (
                "endpointWithdrawn",
                "endpoint withdrawn",
                self.endpoint_withdrawn.as_ref(),
            ),
            ("fenced", "old owner fenced", self.fenced.as_ref()),
            ("oldPodGone", "old pod gone", self.old_pod_gone.as_ref()),
            (
                "volumesDetached",
                "volumes detached",
                self.volumes_detached.as_ref(),
            ),
            (
                "vipReleased",
                "virtual IPs released",
                self.vip_released.as_ref(),
            ),
            ("podCreated", "new pod created", self.pod_created.as_ref()),
            ("online", "online, endpoint published", self.online.as_ref()),
        ]
    }

    /// `placement`, `planned move` or `failover`.
    pub fn kind(&self) -> &'static str {
        match (self.from.is_some(), self.planned) {
            (false, _) => "placement",
            (true, true) => "planned move",
            (true, false) => "failover",
        }
    }

    /// `failover from node-0 to node-1 (NodeDown: LeaseStale)`, then how long it took
    /// (`, 0.2 s`) once online, or `, in progress`.
    pub fn heading(&self, in_progress: bool) -> String {
        let route = match (&self.from, &self.to) {
            (Some(f), Some(t)) => format!(" from {f} to {t}"),
            (Some(f), None) => format!(" from {f}"),
            (None, Some(t)) => format!(" on {t}"),
            (None, None) => String::new(),
        };
        let took = match (in_progress, &self.online) {
            (true, _) => ", in progress".to_string(),
            (false, Some(t)) => format!(
                ", {:.1} s",
                t.0.duration_since(self.started.0).as_secs_f64()
            ),
            (false, None) => String::new(),
        };
        format!("{}{route} ({}){took}", self.kind(), self.reason)
    }

    /// One line for `status.historySummary`: when it started (UTC), then its heading.
    pub fn summary(&self) -> String {
        format!(
            "{}  {}",
            self.started.0.strftime("%Y-%m-%d %H:%M:%S"),
            self.heading(false)
        )
    }
}
