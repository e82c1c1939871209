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
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// The metric label of a failed reconcile.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotLeader => "not_leader",
            Error::Missing(_) => "missing_field",
            Error::NetworkNameTaken(_) => "network_name_taken",
            Error::Serde(_) => "serialization",
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
