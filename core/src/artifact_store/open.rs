//! Opening a store from its URL: a local path or `file://` URL (a directory,
//! created if missing) or `s3://bucket/prefix` (credentials, endpoint,
//! region and `AWS_ALLOW_HTTP` from the usual `AWS_*` environment variables,
//! or from explicit options, which win).

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;

use super::{ArtifactStore, StoreError};

impl ArtifactStore {
    /// Open the store `url` names, with `options` as `(key, value)` pairs in
    /// the `AWS_*` spelling (`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID`,
    /// `AWS_ALLOW_HTTP`, ...) over the environment's. Nothing is contacted
    /// yet: [`ArtifactStore::probe`] checks the store works.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self, StoreError> {
        let bad = |reason: String| StoreError::BadUrl {
            url: url.to_string(),
            reason,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(bad(
                    "no bucket: write s3://bucket or s3://bucket/prefix".into()
                ));
            }
            let prefix = prefix.trim_end_matches('/');
            if !prefix.is_empty() {
                super::key::check(prefix).map_err(|e| bad(format!("prefix: {e}")))?;
            }
            let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
            for (key, value) in options {
                let parsed: AmazonS3ConfigKey = key
                    .to_ascii_lowercase()
                    .parse()
                    .map_err(|_| bad(format!("unknown S3 option `{key}`")))?;
                builder = builder.with_config(parsed, value.clone());
            }
            let s3 = builder.build().map_err(|e| bad(e.to_string()))?;
            return Ok(Self::from_parts(Arc::new(s3), Path::from(prefix), url));
        }
        let dir = if let Some(path) = url.strip_prefix("file://") {
            PathBuf::from(path)
        } else if url.contains("://") {
            return Err(bad(
                "unsupported scheme; use a local path, file:///path or s3://bucket/prefix".into(),
            ));
        } else {
            PathBuf::from(url)
        };
        if url.is_empty() {
            return Err(bad("empty".into()));
        }
        Self::local(&dir).map_err(bad)
    }

    /// A store in directory `dir`, created if missing.
    fn local(dir: &FsPath) -> Result<Self, String> {
        let dir = std::path::absolute(dir).map_err(|e| format!("resolving the path: {e}"))?;
        std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let fs = LocalFileSystem::new_with_prefix(&dir)
            .map_err(|e| format!("opening {}: {e}", dir.display()))?
            // Empty folders left by deleted objects go with them.
            .with_automatic_cleanup(true);
        Ok(Self::from_parts(
            Arc::new(fs),
            Path::default(),
            &format!("file://{}", dir.display()),
        ))
    }

    fn from_parts(inner: Arc<dyn object_store::ObjectStore>, prefix: Path, url: &str) -> Self {
        Self {
            inner,
            prefix,
            url: url.into(),
            verified: Arc::default(),
        }
    }

    /// The directory of a local store, None for a bucket (tests flip bytes
    /// in it; the benchmark reports it).
    pub fn local_dir(&self) -> Option<PathBuf> {
        self.url.strip_prefix("file://").map(PathBuf::from)
    }

    /// Where the object `key` of a local store lies on disk.
    pub fn local_path(&self, key: &str) -> Option<PathBuf> {
        super::key::check(key).ok()?;
        Some(self.local_dir()?.join(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_or_refused_with_the_url_and_reason() {
        for bad in ["ftp://x/y", "s3://", "s3:///prefix", ""] {
            let e = ArtifactStore::open(bad, &[]).expect_err(bad);
            assert!(e.to_string().contains(&format!("`{bad}`")), "{e}");
        }
        let e = ArtifactStore::open("s3://b/p", &[("NOT_AN_OPTION".into(), "1".into())])
            .expect_err("unknown option");
        assert!(e.to_string().contains("NOT_AN_OPTION"), "{e}");
        let e = ArtifactStore::open("s3://b/../p", &[]).expect_err("traversing prefix");
        assert!(e.to_string().contains("prefix"), "{e}");
    }

    #[test]
    fn a_path_under_a_file_cannot_be_a_store() {
        let file = std::env::temp_dir().join(format!("maelab-not-a-dir-{}", uuid::Uuid::new_v4()));
        std::fs::write(&file, b"x").expect("write");
        let url = file.join("artifacts").display().to_string();
        let e = ArtifactStore::open(&url, &[]).expect_err("under a file");
        let _ = std::fs::remove_file(&file);
        assert!(e.to_string().contains(&url), "{e}");
    }
}
