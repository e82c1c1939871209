//! The part of a CSI driver's external-attacher that the API server sees: it marks the
//! VolumeAttachments of one driver as attached. No finalizer is added, so a deleted
//! attachment is gone at once, as after a successful detach.

use futures::StreamExt;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

/// Runs until aborted.
pub async fn play_csi_attacher(client: Client, driver: String) {
    let api: Api<VolumeAttachment> = Api::all(client);
    let mut events = watcher(api.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(va) = event else { continue };
        let attached = va.status.as_ref().is_some_and(|s| s.attached);
        if va.spec.attacher != driver || attached || va.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let patch = serde_json::json!({"status": {"attached": true}});
        if let Err(e) = api
            .patch_status(
                &va.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            tracing::debug!(error = %e, "marking a VolumeAttachment attached");
        }
    }
}
