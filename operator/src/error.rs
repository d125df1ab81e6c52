//! One error type for the whole reconciler; each variant has a metric label so dashboards can
//! tell a bad spec (user's problem) from an API failure (cluster's problem).

/// Everything that can stop a reconcile.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API error while {action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },

    /// The spec passed the CRD's schema but cannot be acted upon.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),

    /// A Secret the spec refers to is missing or lacks the key.
    #[error("missing secret: {0}")]
    MissingSecret(String),

    /// The operator's RBAC does not cover this resource's namespace (a deployment choice the
    /// installer must change, not a transient failure).
    #[error("forbidden: {0}")]
    Forbidden(String),

    /// The object lacks metadata the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),

    /// The finalizer helper failed around the reconcile or the cleanup.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),

    /// The CRD could not be serialised.
    #[error("serialising: {0}")]
    Serialize(String),
}

impl Error {
    /// Short label for the `error` dimension of metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::MissingSecret(_) => "missing_secret",
            Error::MissingMetadata(_) => "missing_metadata",
            Error::Forbidden(_) => "forbidden",
            Error::Finalizer(_) => "finalizer",
            Error::Serialize(_) => "serialize",
        }
    }

    /// Errors a user must fix in the spec (retrying sooner will not help).
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_) | Error::MissingSecret(_) | Error::Forbidden(_)
        )
    }

    /// The `reason` of the `Ready=False` condition and Warning Event for a user error.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Forbidden(_) => "Forbidden",
            _ => "InvalidSpec",
        }
    }
}

/// Adds what the operator was doing to a `kube::Error`.
pub trait KubeContext<T> {
    fn context(self, action: impl Into<String>) -> Result<T, Error>;
}

impl<T> KubeContext<T> for Result<T, kube::Error> {
    fn context(self, action: impl Into<String>) -> Result<T, Error> {
        self.map_err(|source| Error::Kube {
            action: action.into(),
            source,
        })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
