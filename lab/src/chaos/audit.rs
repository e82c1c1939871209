//! Reads the API server's audit log (JSON lines) as it is written, for the invariant
//! watcher. New lines are awaited with inotify on the log's directory, not by polling.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

use super::checker::{AuditRecord, OUT_OF_SERVICE_TAINT, Observation, Observed};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEvent {
    stage: Option<String>,
    verb: String,
    #[serde(default)]
    user: RawUser,
    user_agent: Option<String>,
    object_ref: Option<RawRef>,
    response_status: Option<RawStatus>,
    request_object: Option<serde_json::Value>,
    response_object: Option<serde_json::Value>,
    request_received_timestamp: String,
}

#[derive(Deserialize, Default)]
struct RawUser {
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRef {
    resource: Option<String>,
    subresource: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
struct RawStatus {
    code: Option<i32>,
}

/// Parses one line of the audit log; `None` for stages other than ResponseComplete.
pub fn parse_line(line: &str) -> Result<Option<AuditRecord>> {
    let raw: RawEvent = serde_json::from_str(line).context("an audit line")?;
    if raw.stage.as_deref() != Some("ResponseComplete") {
        return Ok(None);
    }
    let r = raw.object_ref.unwrap_or(RawRef {
        resource: None,
        subresource: None,
        namespace: None,
        name: None,
    });
    let resource = r.resource.unwrap_or_default();
    let request = raw.request_object.unwrap_or_default();
    let stored_node_fenced = (resource == "nodes" && raw.verb != "delete")
        .then(|| {
            let node = raw.response_object.as_ref()?;
            (node["kind"] == "Node").then(|| {
                node["spec"]["taints"]
                    .as_array()
                    .is_some_and(|ts| ts.iter().any(|t| t["key"] == OUT_OF_SERVICE_TAINT))
            })
        })
        .flatten();
    Ok(Some(AuditRecord {
        verb: raw.verb,
        resource,
        subresource: r.subresource,
        namespace: r.namespace,
        name: r.name,
        user: raw.user.username,
        user_agent: raw.user_agent,
        code: raw.response_status.and_then(|s| s.code),
        received: raw
            .request_received_timestamp
            .parse()
            .context("requestReceivedTimestamp")?,
        grace_period: request["gracePeriodSeconds"].as_i64(),
        precondition_uid: request["preconditions"]["uid"].as_str().map(str::to_string),
        stored_node_fenced,
    }))
}

/// Changes in `dir`, as inotify reports them, read on a thread of its own (a blocking
/// read: tokio's `AsyncFd` would need `unsafe`). The thread ends at the first change after
/// the receiver is gone.
fn changes(dir: &Path) -> Result<UnboundedReceiver<()>> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    inotify.add_watch(
        dir,
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_MOVED_TO,
    )?;
    let (tx, rx) = unbounded_channel();
    std::thread::Builder::new()
        .name("audit-log-inotify".into())
        .spawn(move || {
            while inotify.read_events().is_ok() {
                if tx.send(()).is_err() {
                    return;
                }
            }
        })?;
    Ok(rx)
}

/// Follows `path` from its beginning, sending each record; runs until aborted or the
/// receiver is gone. Waits for the file to appear.
pub async fn follow(path: PathBuf, tx: UnboundedSender<Observation>) -> Result<()> {
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut changed = changes(&dir)?;
    let mut file: Option<tokio::fs::File> = None;
    let mut offset: u64 = 0;
    let mut partial: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        if file.is_none() {
            file = tokio::fs::File::open(&path).await.ok();
        }
        if let Some(f) = file.as_mut() {
            // A file that shrank was replaced: start it over.
            if f.metadata().await.is_ok_and(|m| m.len() < offset) {
                offset = 0;
                partial.clear();
            }
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            loop {
                let n = f.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                offset += n as u64;
                partial.extend_from_slice(&buf[..n]);
                while let Some(end) = partial.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line);
                    let what = match parse_line(text.trim()) {
                        Ok(Some(r)) => Observed::Audit(r),
                        Ok(None) => continue,
                        Err(e) => Observed::Note(format!("unreadable audit line: {e:#}")),
                    };
                    let obs = Observation {
                        at: Instant::now(),
                        wall: jiff::Timestamp::now(),
                        fresh: true,
                        what,
                    };
                    if tx.send(obs).is_err() {
                        return Ok(());
                    }
                }
            }
        }
        // Until something in the directory changes; at most a second, in case a change
        // was missed (a file replaced under the watch).
        if let Ok(None) = tokio::time::timeout(Duration::from_secs(1), changed.recv()).await {
            return Ok(());
        }
        while changed.try_recv().is_ok() {}
        if tx.is_closed() {
            return Ok(());
        }
    }
}
