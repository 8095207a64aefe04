//! Artifact bytes (checkpoints, reconstructions, uploaded files) in an object
//! store reached through the `object_store` crate: a local directory by
//! default (one host), an S3-compatible bucket when workers run on several
//! hosts. PostgreSQL keeps only the metadata (key, size, sha256, kind,
//! epoch; `crate::db::artifacts`).
//!
//! Rules this module keeps:
//! - Uploads stream: a chunk at a time into the sha256 and the store
//!   (multipart past [`PART_SIZE`]); nothing holds a whole file.
//! - Keys are fresh per upload ([`key::new_key`]), so the object a committed
//!   row names is never overwritten; a replaced object is deleted after the
//!   commit that replaced it (see [`gc`]).
//! - Nothing is served or trained from unless it hashes to the stored sha256
//!   ([`ArtifactStore::verified_stream`], [`ArtifactStore::download_to_file`]).

mod error;
pub mod gc;
pub mod key;
pub mod migrate;
mod open;
mod stream;
pub mod testing;
mod verified;

use std::ops::Range;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

pub use error::StoreError;

/// Uploads up to this size go in one request; larger ones in parts of it.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of a multipart upload in flight at once.
const PARTS_IN_FLIGHT: usize = 2;

/// A stream of an object's bytes.
pub type ByteStream = BoxStream<'static, Result<Bytes, StoreError>>;

/// What an upload stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub key: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// An open artifact store. Cheap to clone.
#[derive(Clone)]
pub struct ArtifactStore {
    inner: Arc<dyn ObjectStore>,
    /// Inside the bucket (`s3://bucket/prefix`); empty for a local directory.
    prefix: Path,
    url: Arc<str>,
    /// Keys whose whole object hashed to its sha256 once, with their size:
    /// ranges are served only from these.
    verified: Arc<Mutex<verified::VerifiedKeys>>,
}

impl std::fmt::Debug for ArtifactStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArtifactStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ArtifactStore {
    /// The URL the store was opened from (what errors and logs name).
    pub fn url(&self) -> &str {
        &self.url
    }

    fn location(&self, key: &str) -> Result<Path, StoreError> {
        key::check(key)?;
        Ok(self.prefix.parts().chain(Path::from(key).parts()).collect())
    }

    fn failed(&self, op: &'static str, key: &str, source: object_store::Error) -> StoreError {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound {
                url: self.url.to_string(),
                key: key.to_string(),
            },
            source => StoreError::Store {
                url: self.url.to_string(),
                op,
                key: key.to_string(),
                source: Box::new(source),
            },
        }
    }

    /// Store the bytes of `body` under `key`, hashing them on the way. With
    /// `expected`, a body that hashes otherwise stores nothing
    /// ([`StoreError::DigestMismatch`]); past `limit` bytes nothing is stored
    /// either ([`StoreError::TooLarge`]).
    pub async fn put_stream<S>(
        &self,
        key: &str,
        body: S,
        expected: Option<&str>,
        limit: Option<u64>,
    ) -> Result<StoredObject, StoreError>
    where
        S: Stream<Item = Result<Bytes, std::io::Error>> + Send,
    {
        let location = self.location(key)?;
        let mut body = std::pin::pin!(body);
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let mut take = |chunk: &Bytes| -> Result<(), StoreError> {
            size += chunk.len() as u64;
            if let Some(limit) = limit
                && size > limit
            {
                return Err(StoreError::TooLarge { limit });
            }
            hasher.update(chunk);
            Ok(())
        };
        // The first part decides: a small object goes in one request.
        let mut first = BytesMut::new();
        let mut more = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(StoreError::Source)?;
            take(&chunk)?;
            if first.len() + chunk.len() > PART_SIZE {
                more = Some(chunk);
                break;
            }
            first.extend_from_slice(&chunk);
        }
        let Some(next) = more else {
            let sha256 = hex::encode(hasher.finalize());
            check_digest(&sha256, expected)?;
            self.inner
                .put(&location, PutPayload::from_bytes(first.freeze()))
                .await
                .map_err(|e| self.failed("put", key, e))?;
            return Ok(StoredObject {
                key: key.to_string(),
                size,
                sha256,
            });
        };
        let upload = self
            .inner
            .put_multipart(&location)
            .await
            .map_err(|e| self.failed("start multipart upload", key, e))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        writer.put(first.freeze());
        writer.put(next);
        let streamed: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Source)?;
                take(&chunk)?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| self.failed("upload part", key, e))?;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        let sha256 = hex::encode(hasher.finalize());
        if let Err(e) = streamed.and_then(|()| check_digest(&sha256, expected)) {
            if let Err(abort) = writer.abort().await {
                tracing::warn!(key, error = %abort, "aborting a refused upload failed");
            }
            return Err(e);
        }
        writer
            .finish()
            .await
            .map_err(|e| self.failed("complete multipart upload", key, e))?;
        Ok(StoredObject {
            key: key.to_string(),
            size,
            sha256,
        })
    }

    /// [`Self::put_stream`] from a reader (a file).
    pub async fn put_reader<R>(&self, key: &str, reader: R) -> Result<StoredObject, StoreError>
    where
        R: AsyncRead + Send + Unpin,
    {
        self.put_stream(key, stream::read_chunks(reader), None, None)
            .await
    }

    /// Upload the file at `path` under `key`.
    pub async fn put_file(
        &self,
        key: &str,
        path: &std::path::Path,
    ) -> Result<StoredObject, StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(StoreError::Source)?;
        self.put_reader(key, file).await
    }

    /// Store `bytes` (small artifacts already in memory: images).
    pub async fn put_bytes(
        &self,
        key: &str,
        bytes: impl Into<Bytes>,
    ) -> Result<StoredObject, StoreError> {
        self.put_stream(key, futures::stream::iter([Ok(bytes.into())]), None, None)
            .await
    }

    /// The object's bytes, all or `range`, unverified, with the object's
    /// whole size.
    pub async fn get_stream(
        &self,
        key: &str,
        range: Option<Range<u64>>,
    ) -> Result<(u64, ByteStream), StoreError> {
        let location = self.location(key)?;
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..Default::default()
        };
        let got = self
            .inner
            .get_opts(&location, options)
            .await
            .map_err(|e| self.failed("get", key, e))?;
        let size = got.meta.size;
        if let Some(r) = &range
            && (r.start >= r.end || r.end > size)
        {
            return Err(StoreError::BadRange {
                start: r.start,
                end: r.end,
                size,
            });
        }
        let this = self.clone();
        let owned_key = key.to_string();
        let bytes = stream::payload_chunks(got)
            .map_err(move |e| this.failed("read", &owned_key, e))
            .boxed();
        Ok((size, bytes))
    }

    /// The whole object, hashed while it streams; the last chunk is held
    /// back until the hash matches `sha256`, so a reader never gets a
    /// complete corrupt file: on a mismatch the stream ends with
    /// [`StoreError::Corrupt`] (and it is logged).
    pub async fn verified_stream(&self, key: &str, sha256: &str) -> Result<ByteStream, StoreError> {
        let (size, bytes) = self.get_stream(key, None).await?;
        let this = self.clone();
        let (key, expected) = (key.to_string(), sha256.to_string());
        Ok(stream::held_until_hashed(bytes, move |actual| {
            if actual == expected {
                this.remember_verified(&key, &expected, size);
                Ok(())
            } else {
                tracing::error!(url = %this.url, key, actual, expected, "artifact checksum mismatch; not served");
                Err(StoreError::Corrupt {
                    url: this.url.to_string(),
                    key: key.clone(),
                    actual,
                    expected: expected.clone(),
                })
            }
        }))
    }

    fn remember_verified(&self, key: &str, sha256: &str, size: u64) {
        if let Ok(mut seen) = self.verified.lock() {
            seen.insert(key, sha256, size);
        }
    }

    /// Hash the whole object once (remembered afterwards) and answer its
    /// size: ranges are served only from verified objects.
    pub async fn verify(&self, key: &str, sha256: &str) -> Result<u64, StoreError> {
        if let Some(size) = self
            .verified
            .lock()
            .ok()
            .and_then(|seen| seen.get(key, sha256))
        {
            return Ok(size);
        }
        let mut bytes = self.verified_stream(key, sha256).await?;
        let mut size = 0u64;
        while let Some(chunk) = bytes.next().await {
            size += chunk?.len() as u64;
        }
        Ok(size)
    }

    /// Download the object to `path`, checking its sha256; a corrupt object
    /// leaves no file behind.
    pub async fn download_to_file(
        &self,
        key: &str,
        sha256: &str,
        path: &std::path::Path,
    ) -> Result<u64, StoreError> {
        let local = |source| StoreError::LocalFile {
            path: path.display().to_string(),
            source,
        };
        let (_, mut bytes) = self.get_stream(key, None).await?;
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut hasher = Sha256::new();
        let mut size = 0u64;
        let copied: Result<(), StoreError> = async {
            while let Some(chunk) = bytes.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(local)?;
            }
            file.flush().await.map_err(local)
        }
        .await;
        let actual = hex::encode(hasher.finalize());
        let outcome = copied.and_then(|()| {
            if actual == sha256 {
                Ok(size)
            } else {
                Err(StoreError::Corrupt {
                    url: self.url.to_string(),
                    key: key.to_string(),
                    actual,
                    expected: sha256.to_string(),
                })
            }
        });
        if outcome.is_err() {
            drop(file);
            let _ = tokio::fs::remove_file(path).await;
        }
        outcome
    }

    /// Read a small object whole (tests, probes).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, StoreError> {
        let (_, bytes) = self.get_stream(key, None).await?;
        let chunks: Vec<Bytes> = bytes.try_collect().await?;
        Ok(chunks.concat().into())
    }

    /// Delete the object under `key`; a missing object is not an error (a
    /// second sweep, or an upload that never landed).
    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let location = self.location(key)?;
        if let Ok(mut seen) = self.verified.lock() {
            seen.remove(key);
        }
        match self.inner.delete(&location).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.failed("delete", key, e)),
        }
    }

    /// Write, read back and delete a small object under `.maelab-probe/`:
    /// a store that is unreachable, read-only or refuses the credentials
    /// fails here, at start, with its URL, rather than at the first
    /// checkpoint.
    pub async fn probe(&self) -> Result<(), StoreError> {
        let probe_err = |reason: String| StoreError::Probe {
            url: self.url.to_string(),
            reason,
        };
        let location: Path = self
            .prefix
            .parts()
            .chain(Path::from(format!(".maelab-probe/{}", uuid::Uuid::new_v4().simple())).parts())
            .collect();
        let payload = Bytes::from(format!("maelab probe {}", uuid::Uuid::new_v4()));
        self.inner
            .put(&location, PutPayload::from_bytes(payload.clone()))
            .await
            .map_err(|e| probe_err(format!("writing a probe object failed: {e}")))?;
        let back = self
            .inner
            .get(&location)
            .await
            .map_err(|e| probe_err(format!("reading the probe object back failed: {e}")))?
            .bytes()
            .await
            .map_err(|e| probe_err(format!("reading the probe object back failed: {e}")))?;
        if back != payload {
            return Err(probe_err(
                "the probe object read back differs from what was written".into(),
            ));
        }
        self.inner
            .delete(&location)
            .await
            .map_err(|e| probe_err(format!("deleting the probe object failed: {e}")))?;
        Ok(())
    }
}

fn check_digest(actual: &str, expected: Option<&str>) -> Result<(), StoreError> {
    match expected {
        Some(expected) if !actual.eq_ignore_ascii_case(expected) => {
            Err(StoreError::DigestMismatch {
                actual: actual.to_string(),
                expected: expected.to_string(),
            })
        }
        _ => Ok(()),
    }
}

/// Read `reader` to its end into chunks (used by [`stream::read_chunks`]).
async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut R,
    size: usize,
) -> std::io::Result<Option<Bytes>> {
    let mut buf = BytesMut::with_capacity(size);
    while buf.len() < size {
        if reader.read_buf(&mut buf).await? == 0 {
            break;
        }
    }
    Ok((!buf.is_empty()).then(|| buf.freeze()))
}
