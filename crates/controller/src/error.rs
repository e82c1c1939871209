//! The controller's one error type. Its variant doubles as the metric label of a failed
//! reconcile; the helpers make the API calls that must be idempotent say so.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("not the leader: write dropped")]
    NotLeader,
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("a Service named {0:?} exists that this instance did not create; not taking it over")]
    NetworkNameTaken(String),
    #[error(
        "a pod named {0:?} exists that this instance does not control; not counting it as the instance's"
    )]
    PodNameTaken(String),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
    #[error("no answer in time: {0}")]
    Timeout(&'static str),
}

impl Error {
    /// A write refused because it was made from an older version of the object than the API
    /// server's: a resourceVersion conflict (409), or the finalizer patch whose `test` of
    /// the finalizer list failed (422) because the cache had not yet seen the last change.
    /// The newer version is on its way through the watch; retrying soon is all it takes.
    pub fn is_stale_write(&self) -> bool {
        use kube::runtime::finalizer::Error as F;
        match self {
            Error::Kube(kube::Error::Api(e)) => e.code == 409,
            Error::Finalizer(f) => match f.as_ref() {
                F::AddFinalizer(kube::Error::Api(e)) | F::RemoveFinalizer(kube::Error::Api(e)) => {
                    e.code == 409 || e.code == 422
                }
                F::ApplyFailed(inner) | F::CleanupFailed(inner) => inner.is_stale_write(),
                _ => false,
            },
            _ => false,
        }
    }

    /// The metric label of a failed reconcile.
    pub fn label(&self) -> &'static str {
        match self {
            e if e.is_stale_write() => "conflict",
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotLeader => "not_leader",
            Error::Missing(_) => "missing_field",
            Error::NetworkNameTaken(_) => "network_name_taken",
            Error::PodNameTaken(_) => "pod_name_taken",
            Error::Serde(_) => "serialization",
            Error::Timeout(_) => "timeout",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A delete whose object is already gone has done its job.
pub fn ignore_missing<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A delete conditioned on a UID (`with_uid`) whose object is gone, or was replaced by
/// another of the same name (409: the precondition failed), has nothing left to do.
pub fn ignore_gone<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes only the object of this UID: a late delete never hits a newer object of the
/// same name.
pub fn with_uid(mut dp: kube::api::DeleteParams, uid: &str) -> kube::api::DeleteParams {
    if !uid.is_empty() {
        dp.preconditions = Some(kube::api::Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        });
    }
    dp
}

/// A create whose object already exists (made by this round repeated, or by a previous
/// leader) has done its job: names are deterministic, so it is the same object.
pub fn ignore_exists<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use kube::runtime::finalizer::Error as F;

    use super::*;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            ..Default::default()
        }))
    }

    #[test]
    fn a_finalizer_patch_from_a_stale_cache_is_a_conflict_not_a_failure() {
        let finalizer = |e: F<Error>| Error::Finalizer(Box::new(e));
        assert!(Error::Kube(api(409)).is_stale_write());
        assert!(finalizer(F::AddFinalizer(api(422))).is_stale_write());
        assert!(finalizer(F::RemoveFinalizer(api(422))).is_stale_write());
        assert!(finalizer(F::ApplyFailed(Error::Kube(api(409)))).is_stale_write());
        assert_eq!(finalizer(F::AddFinalizer(api(422))).label(), "conflict");
        assert!(!finalizer(F::AddFinalizer(api(403))).is_stale_write());
        assert!(
            !Error::Kube(api(422)).is_stale_write(),
            "a refused object is not stale"
        );
        assert!(!finalizer(F::ApplyFailed(Error::NotLeader)).is_stale_write());
    }
}
