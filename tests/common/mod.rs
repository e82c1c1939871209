//! What the tests that run the pinned tools (helm, kubectl, promtool) as processes share:
//! where the repository and the tools are, scratch directories, and what a run printed.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kube_failover_lab::controlplane::default_tools_bin;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The pinned tool set (`lab/tools/install.sh`).
pub fn tools() -> PathBuf {
    default_tools_bin().expect("tools directory")
}

/// A scratch directory under the target directory, removed when dropped.
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap()
}

/// What a command printed, and whether it succeeded.
pub struct Run {
    pub command: String,
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn new(program: &Path, args: &[&str], out: std::process::Output) -> Self {
        Run {
            command: format!("{} {}", program.display(), args.join(" ")),
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "$ {}\n(ok: {})\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.ok, self.stdout, self.stderr
        )
    }
}

/// helm's configuration, cache and data in a directory of the tests (`home`, under the
/// target directory) rather than the user's.
pub fn helm_env(home: &str) -> [(&'static str, String); 3] {
    let home = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(home);
    let dir = |d: &str| home.join(d).display().to_string();
    [
        ("HELM_CONFIG_HOME", dir("config")),
        ("HELM_CACHE_HOME", dir("cache")),
        ("HELM_DATA_HOME", dir("data")),
    ]
}
