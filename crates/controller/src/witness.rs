//! The witness: a small process that renews one Lease in `kube-node-lease`, named
//! `kube-failover-witness-*`, which a FailoverCluster names as its witness
//! (`spec.quorum.witness.lease`). Run where the members' failures do not reach (another
//! zone, the control plane), it gives a two-node cluster the third vote.
//!
//! Every write carries the resourceVersion read, so two witness processes for one Lease
//! (a rollout) cannot lose each other's renewals unseen; the Lease's duration is three
//! renewals, so that the controller sees a break in its renewals only when one is really
//! late (see `heartbeats::steady_since`).

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use kube_failover_core::api::{NODE_LEASE_NAMESPACE, WITNESS_LEASE_PREFIX};

/// What a witness renews, and how often.
#[derive(Clone, Debug)]
pub struct WitnessConfig {
    /// The Lease's name: `kube-failover-witness-*`.
    pub lease: String,
    /// Who renews it (the pod's name), as `holderIdentity`.
    pub identity: String,
    pub renew_every: Duration,
}

impl WitnessConfig {
    /// Refuses a name a FailoverCluster could not name as its witness.
    pub fn validate(&self) -> anyhow::Result<()> {
        let suffix = self.lease.strip_prefix(WITNESS_LEASE_PREFIX);
        let valid = suffix.is_some_and(|s| {
            !s.is_empty()
                && self.lease.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
                && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
                && s.chars().last().is_some_and(|c| c.is_ascii_alphanumeric())
        });
        anyhow::ensure!(
            valid,
            "--lease {:?}: a witness Lease is named {WITNESS_LEASE_PREFIX}<name> (lower-case \
             letters, digits, '-' and '.'), as the FailoverCluster's quorum.witness.lease names it",
            self.lease
        );
        anyhow::ensure!(
            self.renew_every >= Duration::from_millis(100),
            "--renew-ms: at least 100"
        );
        Ok(())
    }

    fn duration_seconds(&self) -> i32 {
        (self.renew_every * 3).as_secs_f64().ceil().max(1.0) as i32
    }
}

/// Renews the witness Lease until the process ends. Errors are logged and retried at the
/// next renewal: a witness that cannot reach the API server simply stops voting.
pub async fn run(client: Client, config: WitnessConfig) -> anyhow::Result<()> {
    config.validate()?;
    let api: Api<Lease> = Api::namespaced(client, NODE_LEASE_NAMESPACE);
    let mut tick = tokio::time::interval(config.renew_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut renewing = false;
    loop {
        tick.tick().await;
        match renew(&api, &config).await {
            Ok(()) if !renewing => {
                tracing::info!(lease = %config.lease, "renewing the witness Lease");
                renewing = true;
            }
            Ok(()) => {}
            Err(e) => {
                tracing::warn!(lease = %config.lease, error = %e, "witness Lease not renewed");
                renewing = false;
            }
        }
    }
}

async fn renew(api: &Api<Lease>, config: &WitnessConfig) -> kube::Result<()> {
    let now = MicroTime(Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some(config.identity.clone()),
        lease_duration_seconds: Some(config.duration_seconds()),
        renew_time: Some(now),
        ..Default::default()
    };
    let params = PostParams {
        field_manager: Some("kube-failover-witness".into()),
        ..Default::default()
    };
    match api.get_opt(&config.lease).await? {
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(&config.lease, &params, &lease).await?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(config.lease.clone()),
                    namespace: Some(NODE_LEASE_NAMESPACE.into()),
                    ..Default::default()
                },
                spec: Some(spec),
            };
            api.create(&params, &lease).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lease: &str, ms: u64) -> WitnessConfig {
        WitnessConfig {
            lease: lease.into(),
            identity: "w".into(),
            renew_every: Duration::from_millis(ms),
        }
    }

    #[test]
    fn only_a_name_a_cluster_can_name_is_renewed() {
        assert!(config("kube-failover-witness-a", 1000).validate().is_ok());
        assert!(
            config("kube-failover-witness-zone-c.1", 1000)
                .validate()
                .is_ok()
        );
        for bad in [
            "node-1",
            "kube-failover-witness-",
            "kube-failover-witness-A",
            "kube-failover-agent-n1",
            "kube-failover-witness--",
        ] {
            assert!(config(bad, 1000).validate().is_err(), "{bad}");
        }
        assert!(config("kube-failover-witness-a", 10).validate().is_err());
        assert_eq!(
            config("kube-failover-witness-a", 2000).duration_seconds(),
            6
        );
        assert_eq!(config("kube-failover-witness-a", 250).duration_seconds(), 1);
    }
}
