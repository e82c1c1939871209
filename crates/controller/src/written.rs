//! Statuses this replica wrote that its cache may not show yet, for decisions that must see
//! each other (anti-affinity).

use std::collections::BTreeMap;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube_failover_core::api::FailoverClusterInstance;

use super::observe::Stores;

/// The statuses this replica wrote for instances with anti-affinity classes, that its cache
/// may not show yet. Its lock is held from observing to writing the status, so that two
/// instances of one class decided at once see each other's choice: without it both would
/// be placed from a cache that shows neither (as the scheduler assumes a pod bound before
/// its cache says so).
#[derive(Clone, Default)]
pub struct Written(std::sync::Arc<tokio::sync::Mutex<BTreeMap<String, Recorded>>>);

#[derive(Clone)]
pub struct Recorded {
    instance: std::sync::Arc<FailoverClusterInstance>,
    at: std::time::Instant,
}

/// How long a written status stands in for the cache's: the watch delivers it long before.
const WRITTEN_FOR: std::time::Duration = std::time::Duration::from_secs(10);

impl Written {
    pub async fn lock(&self) -> tokio::sync::MutexGuard<'_, BTreeMap<String, Recorded>> {
        self.0.lock().await
    }
}

/// Records `written` (as the API server returned it) and forgets what the cache now shows.
pub fn record_written(
    written: &mut BTreeMap<String, Recorded>,
    instance: FailoverClusterInstance,
    stores: &Stores,
) {
    let now = std::time::Instant::now();
    written.retain(|_, r| {
        now.duration_since(r.at) < WRITTEN_FOR
            && stores
                .instances
                .get(&ObjectRef::from_obj(r.instance.as_ref()))
                .is_some_and(|cached| cached.resource_version() != r.instance.resource_version())
    });
    written.insert(
        instance.key(),
        Recorded {
            instance: std::sync::Arc::new(instance),
            at: now,
        },
    );
}

/// The instances in the cache, each replaced by the one this replica wrote when the cache
/// does not show that write yet.
pub fn instances_as_written(
    stores: &Stores,
    written: &BTreeMap<String, Recorded>,
) -> Vec<std::sync::Arc<FailoverClusterInstance>> {
    let now = std::time::Instant::now();
    stores
        .instances
        .state()
        .into_iter()
        .map(|cached| match written.get(&cached.key()) {
            Some(r)
                if now.duration_since(r.at) < WRITTEN_FOR
                    && r.instance.uid() == cached.uid()
                    && r.instance.resource_version() != cached.resource_version() =>
            {
                r.instance.clone()
            }
            _ => cached,
        })
        .collect()
}
