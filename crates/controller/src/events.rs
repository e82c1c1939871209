//! Publishing Events.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, Recorder, Reporter};

/// Publishes Events, each through a recorder of its own. kube's `Recorder` keeps every Event
/// it published for six minutes, to fold a repeat into a series, in one map that it scans on
/// each publish and that never shrinks: after a storm of thousands of moves it held about
/// 4 KiB per instance. This controller publishes an Event when something changes (a reason
/// given for the first time, a step of a move), seldom the same twice within minutes, so a
/// repeat is its own Event rather than a count on the last one.
#[derive(Clone)]
pub struct Events {
    client: Client,
    reporter: Reporter,
}

impl Events {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        Recorder::new(self.client.clone(), self.reporter.clone())
            .publish(event, regarding)
            .await
    }
}
