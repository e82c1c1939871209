//! A real containerd for the tests of the agent's self-fencing, and a kubelet stand-in that
//! runs pods in it through CRI.
//!
//! containerd (with runc) comes from the distribution's packages, as on a node; it runs as
//! root with its root, state and sockets in a directory of its own, and its CRI plugin
//! configured for a machine without a network plugin or an image registry:
//! - pods use the host's network namespace (no CNI needed);
//! - the one image, used for the sandbox (`pause`) and the containers alike, is built here
//!   from the static busybox of the `busybox-static` package and imported with `ctr`;
//! - no AppArmor, no systemd cgroup driver, and oom_score_adj restricted to what a process
//!   in a container may set.
//!
//! One at a time per machine: containerd 1.6 keeps its shims' sockets in a fixed directory
//! (`/run/containerd/s`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxPodSandboxConfig,
    LinuxSandboxSecurityContext, ListPodSandboxRequest, NamespaceMode, NamespaceOption,
    PodSandboxConfig, PodSandboxMetadata, PodSandboxState, PodSandboxStatusRequest,
    RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::Channel;

/// The image every sandbox and container runs.
pub const IMAGE: &str = "kube-failover.test/busybox:1";

/// A containerd of the test's own; stopped, with every pod it ran, when dropped.
pub struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
    socket: PathBuf,
}

impl Containerd {
    /// Whether this machine can run it: root, and containerd, runc, ctr and a static busybox
    /// installed (`tests/run.sh` installs them).
    pub fn missing() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("not root".into());
        }
        for path in [
            "/usr/bin/containerd",
            "/usr/bin/ctr",
            "/usr/sbin/runc",
            BUSYBOX,
        ] {
            if !Path::new(path).exists() {
                return Some(format!(
                    "{path} is missing (packages containerd, runc, busybox-static)"
                ));
            }
        }
        None
    }

    /// Starts containerd in `dir` and imports the test image; returns once its CRI
    /// service answers.
    pub async fn start(dir: &Path) -> Result<Self> {
        if let Some(why) = Self::missing() {
            bail!("containerd cannot run here: {why}");
        }
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let socket = dir.join("containerd.sock");
        for sub in ["root", "state", "cni/bin", "cni/conf"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &socket))?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        let mut me = Self {
            dir: dir.clone(),
            child: Some(child),
            socket,
        };
        me.wait_ready().await?;
        let archive = build_image(&dir.join("image"))?;
        me.ctr(&["images", "import"])
            .arg(&archive)
            .output()
            .context("ctr images import")
            .and_then(checked)?;
        Ok(me)
    }

    /// The CRI socket, as the agent's `--cri-socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// containerd's own log.
    pub fn log(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/bin/ctr");
        c.arg("--address")
            .arg(&self.socket)
            .args(["--namespace", "k8s.io"])
            .args(args);
        c
    }

    async fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "containerd exited ({status}); its log, {}:\n{}",
                    self.log().display(),
                    std::fs::read_to_string(self.log()).unwrap_or_default()
                );
            }
            if self.socket.exists()
                && let Ok(mut k) = Kubelet::connect(&self.socket).await
                && k.list().await.is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd's CRI service did not answer within 30 s; its log: {}",
                    self.log().display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops and removes every pod, then containerd.
    pub async fn stop(mut self) -> Result<()> {
        let mut kubelet = Kubelet::connect(&self.socket).await?;
        for id in kubelet.list().await?.into_keys() {
            kubelet.remove(&id).await?;
        }
        self.kill();
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        // Shims and containers outlive containerd: end those of this one (a shim's command
        // line names its socket, a container's root is under its directory), then unmount
        // what they leave, so that the directory can be removed.
        kill_matching(&self.socket.display().to_string(), &self.dir);
        unmount_under(&self.dir);
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Kills (SIGKILL) every process whose command line contains `needle` or whose root
/// directory is under `dir`.
fn kill_matching(needle: &str, dir: &Path) {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid == std::process::id() as i32 {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let root = std::fs::read_link(e.path().join("root")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) || root.starts_with(dir) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Detaches every mount under `dir`, the deepest first.
fn unmount_under(dir: &Path) {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        let _ = nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH);
    }
}

fn checked(out: std::process::Output) -> Result<()> {
    if out.status.success() {
        Ok(())
    } else {
        bail!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )
    }
}

fn config_toml(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    let s = socket.display();
    format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"

[grpc]
  address = "{s}"

[ttrpc]
  address = "{s}.ttrpc"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGE}"
  restrict_oom_score_adj = true
  disable_apparmor = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{d}/cni/bin"
    conf_dir = "{d}/cni/conf"
"#
    )
}

const BUSYBOX: &str = "/bin/busybox";

/// Writes an OCI image archive (one uncompressed layer: `/bin/busybox` and `/bin/sh`, its
/// entrypoint sleeping for ever) into `dir`; returns its path.
fn build_image(dir: &Path) -> Result<PathBuf> {
    let layout = dir.join("layout");
    let rootfs = dir.join("rootfs");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(rootfs.join("bin"))?;
    std::fs::create_dir_all(layout.join("blobs/sha256"))?;
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh"))?;
    let layer = dir.join("layer.tar");
    let out = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-C"])
        .arg(&rootfs)
        .args(["-cf"])
        .arg(&layer)
        .arg("bin")
        .output()
        .context("tar")?;
    checked(out)?;
    let blob = |bytes: &[u8]| -> Result<(String, usize)> {
        let digest = sha256(bytes)?;
        std::fs::write(layout.join("blobs/sha256").join(&digest), bytes)?;
        Ok((format!("sha256:{digest}"), bytes.len()))
    };
    let (layer_digest, layer_size) = blob(&std::fs::read(&layer)?)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let config = serde_json::json!({
        "architecture": arch,
        "os": "linux",
        "config": {"Entrypoint": ["/bin/busybox", "sleep", "2147483647"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
    });
    let (config_digest, config_size) = blob(&serde_json::to_vec(&config)?)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let (manifest_digest, manifest_size) = blob(&serde_json::to_vec(&manifest)?)?;
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": manifest_size,
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index)?)?;
    std::fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    let archive = dir.join("image.tar");
    let out = Command::new("tar")
        .arg("-C")
        .arg(&layout)
        .arg("-cf")
        .arg(&archive)
        .args(["oci-layout", "index.json", "blobs"])
        .output()
        .context("tar")?;
    checked(out)?;
    Ok(archive)
}

fn sha256(bytes: &[u8]) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("sha256sum")?;
    child
        .stdin
        .take()
        .context("sha256sum stdin")?
        .write_all(bytes)?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8(out.stdout)?;
    Ok(text
        .split_whitespace()
        .next()
        .context("sha256sum printed nothing")?
        .to_string())
}

/// What the kubelet does with the runtime, as much as the tests need: run a pod (a sandbox
/// and one container) with the pod's labels on its sandbox, list, look and remove.
pub struct Kubelet {
    client: RuntimeServiceClient<Channel>,
}

impl Kubelet {
    pub async fn connect(socket: &Path) -> Result<Self> {
        Ok(Self {
            client: RuntimeServiceClient::new(kube_failover_agent::cri::channel(socket).await?),
        })
    }

    /// Runs pod `namespace/name` with `labels` (as the kubelet copies a pod's labels onto
    /// its sandbox), in the host's network namespace, with one container that sleeps;
    /// returns the sandbox's ID. `attempt` counts the sandboxes of the pod, as the kubelet
    /// does when it starts one again after its last stopped.
    pub async fn run_pod(
        &mut self,
        namespace: &str,
        name: &str,
        attempt: u32,
        labels: &[(&str, &str)],
    ) -> Result<String> {
        let uid = format!("{namespace}-{name}-{}", std::process::id());
        self.run_pod_with_uid(namespace, name, &uid, attempt, labels)
            .await
    }

    /// As [`Self::run_pod`], for the pod of that UID (a pod object in the API).
    pub async fn run_pod_with_uid(
        &mut self,
        namespace: &str,
        name: &str,
        uid: &str,
        attempt: u32,
        labels: &[(&str, &str)],
    ) -> Result<String> {
        let labels: HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let host_network = NamespaceOption {
            network: NamespaceMode::Node.into(),
            pid: NamespaceMode::Pod.into(),
            ipc: NamespaceMode::Pod.into(),
            ..Default::default()
        };
        let config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.into(),
                namespace: namespace.into(),
                uid: uid.into(),
                attempt,
            }),
            labels,
            linux: Some(LinuxPodSandboxConfig {
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let id = self
            .client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        let container = ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: "main".into(),
                attempt,
            }),
            image: Some(ImageSpec {
                image: IMAGE.into(),
                ..Default::default()
            }),
            command: vec!["/bin/busybox".into(), "sleep".into(), "2147483647".into()],
            ..Default::default()
        };
        let cid = self
            .client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: id.clone(),
                config: Some(container),
                sandbox_config: Some(config),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        self.client
            .start_container(StartContainerRequest { container_id: cid })
            .await
            .context("StartContainer")?;
        Ok(id)
    }

    /// Every sandbox by ID, and whether it is ready (running).
    pub async fn list(&mut self) -> Result<HashMap<String, bool>> {
        let items = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest { filter: None })
            .await
            .context("ListPodSandbox")?
            .into_inner()
            .items;
        Ok(items
            .into_iter()
            .map(|s| (s.id, s.state == i32::from(PodSandboxState::SandboxReady)))
            .collect())
    }

    /// Whether sandbox `id` is ready (running).
    pub async fn ready(&mut self, id: &str) -> Result<bool> {
        let status = self
            .client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: id.into(),
                verbose: false,
            })
            .await
            .context("PodSandboxStatus")?
            .into_inner()
            .status
            .context("no status")?;
        Ok(status.state == i32::from(PodSandboxState::SandboxReady))
    }

    /// Stops and removes sandbox `id` and its containers.
    pub async fn remove(&mut self, id: &str) -> Result<()> {
        self.client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .context("StopPodSandbox")?;
        self.client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.into(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }
}
