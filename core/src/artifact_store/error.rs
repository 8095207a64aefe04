//! What can go wrong with the artifact store, each naming the store's URL
//! (or the key) and the reason, so an operator knows which bucket to check.

/// An artifact store error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL (or an option) cannot name a store.
    #[error("artifact store `{url}`: {reason}")]
    BadUrl { url: String, reason: String },

    /// A key that could escape its run's folder (`..`, `/` at the ends, odd characters).
    #[error("artifact key `{key}` refused: {reason}")]
    BadKey { key: String, reason: &'static str },

    /// The store answered an operation with an error.
    #[error("artifact store {url}: {op} {key}: {source}")]
    Store {
        url: String,
        op: &'static str,
        key: String,
        // Boxed: object_store's error is large and most results are Ok.
        #[source]
        source: Box<object_store::Error>,
    },

    /// No object under `key`.
    #[error("artifact store {url}: no object {key}")]
    NotFound { url: String, key: String },

    /// The bytes read do not hash to the sha256 the database holds.
    #[error("artifact store {url}: object {key} is corrupt: sha256 {actual}, expected {expected}")]
    Corrupt {
        url: String,
        key: String,
        actual: String,
        expected: String,
    },

    /// The upload's bytes do not hash to the sha256 the client declared;
    /// nothing was stored.
    #[error("the body's sha256 is {actual}, not {expected}; nothing was stored")]
    DigestMismatch { actual: String, expected: String },

    /// The upload grew past the limit; nothing was stored.
    #[error("the upload is over the limit of {limit} bytes; nothing was stored")]
    TooLarge { limit: u64 },

    /// Reading the source of an upload (a file, a request body) failed.
    #[error("reading the upload: {0}")]
    Source(#[source] std::io::Error),

    /// Writing a download to a local file failed.
    #[error("writing {path}: {source}")]
    LocalFile {
        path: String,
        #[source]
        source: std::io::Error,
    },

    /// A byte range outside the object.
    #[error("range {start}-{end} is outside the object's {size} bytes")]
    BadRange { start: u64, end: u64, size: u64 },

    /// The start probe (write, read back, delete) failed.
    #[error("artifact store {url} is not usable: {reason}")]
    Probe { url: String, reason: String },
}

impl StoreError {
    /// Whether a retry may cure the error: the store's own failures (network,
    /// 5xx, throttling) are; a missing object, a bad key, a corrupt object,
    /// refused credentials or a bad upload are not.
    pub fn is_transient(&self) -> bool {
        use object_store::Error as E;
        match self {
            Self::Store { source, .. } => !matches!(
                source.as_ref(),
                E::NotFound { .. }
                    | E::InvalidPath { .. }
                    | E::NotSupported { .. }
                    | E::NotImplemented { .. }
                    | E::PermissionDenied { .. }
                    | E::Unauthenticated { .. }
                    | E::AlreadyExists { .. }
                    | E::Precondition { .. }
            ),
            _ => false,
        }
    }
}
