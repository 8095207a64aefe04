//! Fresh S3 buckets for tests: each test gets its own bucket on the
//! S3-compatible server named by `MAELAB_TEST_S3` (what `scripts/test-s3`
//! prints: `http://ACCESS_KEY:SECRET@HOST:PORT`), like `db::testing` gives each
//! test its own database.
//!
//! Without the variable the tests fail with an error naming `scripts/test-s3`:
//! a test that silently skips its store would prove nothing.
//!
//! Buckets are made with a SigV4-signed `CreateBucket` through object_store's
//! own signer and HTTP client, so the helper works on any S3-compatible server
//! (s3s-fs in CI, MinIO, AWS) and needs no access to the server's files.

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3, AmazonS3Builder, AwsAuthorizer, AwsCredential};
use object_store::client::{ClientOptions, HttpConnector, HttpRequestBody, ReqwestConnector};

/// The variable `scripts/test-s3` sets (through `scripts/test`).
pub const ENV: &str = "MAELAB_TEST_S3";

/// The region the test server is addressed as; s3s-fs accepts any.
const REGION: &str = "us-east-1";

/// The prefix inside each test bucket that [`TestBucket::url`] names, so code
/// under test never relies on owning the bucket root.
const PREFIX: &str = "maelab";

/// Why a test bucket could not be had.
#[derive(Debug, thiserror::Error)]
pub enum S3TestError {
    #[error("{ENV} is not set: run `export {ENV}=$(scripts/test-s3)` (scripts/test does)")]
    MissingEnv,
    #[error("{ENV}={value:?}: {reason} (expected http://ACCESS_KEY:SECRET@HOST:PORT)")]
    BadEnv { value: String, reason: String },
    #[error("S3 client for {endpoint}: {source}")]
    Client {
        endpoint: String,
        source: object_store::Error,
    },
    #[error("CreateBucket {bucket} at {endpoint}: {reason}")]
    CreateBucket {
        endpoint: String,
        bucket: String,
        reason: String,
    },
}

/// An S3-compatible server and the credentials to use it.
#[derive(Debug, Clone)]
pub struct TestS3 {
    /// `http://host:port`, without credentials.
    pub endpoint: String,
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl TestS3 {
    /// The server `MAELAB_TEST_S3` names.
    pub fn from_env() -> Result<Self, S3TestError> {
        let value = std::env::var(ENV).map_err(|_| S3TestError::MissingEnv)?;
        Self::parse(&value)
    }

    /// Parse `http://ACCESS_KEY:SECRET@HOST:PORT`. The key and secret are taken
    /// as written, not percent-decoded: test credentials are URL-safe.
    pub fn parse(value: &str) -> Result<Self, S3TestError> {
        let bad = |reason: &str| S3TestError::BadEnv {
            value: value.to_string(),
            reason: reason.to_string(),
        };
        let url = url::Url::parse(value).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(bad("the scheme must be http or https"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        let access_key_id = url.username();
        let secret_access_key = url.password().unwrap_or_default();
        if access_key_id.is_empty() || secret_access_key.is_empty() {
            return Err(bad("no access key or secret"));
        }
        Ok(Self {
            endpoint: format!("{}://{host}:{port}", url.scheme()),
            access_key_id: access_key_id.to_string(),
            secret_access_key: secret_access_key.to_string(),
        })
    }

    /// The AWS_* pairs that reach this server: object_store builder options
    /// (any case) and a child process's environment alike.
    pub fn options(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", self.access_key_id.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret_access_key.as_str()),
            ("AWS_REGION", REGION),
            ("AWS_ALLOW_HTTP", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// Create a new bucket named `maelab-test-<uuid>` and return it.
    pub async fn fresh_bucket(&self) -> Result<TestBucket, S3TestError> {
        let bucket = format!("maelab-test-{}", uuid::Uuid::new_v4().simple());
        self.create_bucket(&bucket).await?;
        Ok(TestBucket {
            s3: self.clone(),
            bucket,
        })
    }

    /// A signed `PUT /bucket` (path-style, as object_store addresses custom
    /// endpoints).
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), S3TestError> {
        self.bucket_request(http::Method::PUT, bucket)
            .await
            .map_err(|reason| S3TestError::CreateBucket {
                endpoint: self.endpoint.clone(),
                bucket: bucket.to_string(),
                reason,
            })
    }

    /// Send a signed, bodiless request to `/bucket`; the error says why it failed.
    async fn bucket_request(&self, method: http::Method, bucket: &str) -> Result<(), String> {
        let mut request = http::Request::builder()
            .method(method)
            .uri(format!("{}/{bucket}", self.endpoint))
            .body(HttpRequestBody::empty())
            .map_err(|e| e.to_string())?;
        let credential = AwsCredential {
            key_id: self.access_key_id.clone(),
            secret_key: self.secret_access_key.clone(),
            token: None,
        };
        AwsAuthorizer::new(&credential, "s3", REGION)
            .try_authorize(&mut request, None)
            .map_err(|e| format!("signing: {e}"))?;
        let client = ReqwestConnector::default()
            .connect(&ClientOptions::new().with_allow_http(true))
            .map_err(|e| e.to_string())?;
        let response = client.execute(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.into_body().bytes().await.unwrap_or_default();
        Err(format!("HTTP {status}: {}", String::from_utf8_lossy(&body)))
    }

    /// An object_store client for the whole bucket, signing with `secret`.
    fn client(&self, bucket: &str, secret: &str) -> Result<AmazonS3, S3TestError> {
        self.options()
            .into_iter()
            .filter(|(k, _)| k != "AWS_SECRET_ACCESS_KEY")
            .chain([("AWS_SECRET_ACCESS_KEY".to_string(), secret.to_string())])
            .try_fold(
                AmazonS3Builder::new().with_bucket_name(bucket),
                |builder, (key, value)| {
                    let key = key.to_ascii_lowercase().parse()?;
                    Ok(builder.with_config(key, value))
                },
            )
            .and_then(AmazonS3Builder::build)
            .map_err(|source| S3TestError::Client {
                endpoint: self.endpoint.clone(),
                source,
            })
    }

    /// Delete every object, then the bucket.
    async fn remove_bucket(&self, bucket: &str) -> Result<(), String> {
        let store = self
            .client(bucket, &self.secret_access_key)
            .map_err(|e| e.to_string())?;
        let locations = store.list(None).map_ok(|meta| meta.location).boxed();
        store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(|e| e.to_string())?;
        self.bucket_request(http::Method::DELETE, bucket).await
    }
}

/// A bucket of its own on the test server, emptied and left when dropped
/// (unless `MAELAB_KEEP_TEST_S3` is set).
#[derive(Debug)]
pub struct TestBucket {
    s3: TestS3,
    bucket: String,
}

/// A fresh bucket on the server `MAELAB_TEST_S3` names.
pub async fn fresh_bucket() -> Result<TestBucket, S3TestError> {
    TestS3::from_env()?.fresh_bucket().await
}

impl TestBucket {
    /// `s3://bucket/prefix`: what `--artifact-store` takes.
    pub fn url(&self) -> String {
        format!("s3://{}/{PREFIX}", self.bucket)
    }

    /// The AWS_* pairs that reach the bucket's server (see [`TestS3::options`]).
    pub fn options(&self) -> Vec<(String, String)> {
        self.s3.options()
    }

    pub fn name(&self) -> &str {
        &self.bucket
    }

    pub fn server(&self) -> &TestS3 {
        &self.s3
    }

    /// An object_store client for the whole bucket (keys are not prefixed).
    pub fn store(&self) -> Result<AmazonS3, S3TestError> {
        self.s3.client(&self.bucket, &self.s3.secret_access_key)
    }

    /// The same client signing with another secret, to test refusals.
    pub fn store_with_secret(&self, secret: &str) -> Result<AmazonS3, S3TestError> {
        self.s3.client(&self.bucket, secret)
    }
}

impl Drop for TestBucket {
    /// Runs on its own thread and runtime because `Drop` may run inside a
    /// current-thread runtime (as `db::testing::TestDb` does).
    fn drop(&mut self) {
        if std::env::var_os("MAELAB_KEEP_TEST_S3").is_some() {
            return;
        }
        let (s3, bucket) = (self.s3.clone(), self.bucket.clone());
        let remover = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            // Best effort: a leftover bucket costs disk in the test server's
            // temporary root, nothing else.
            if let Err(error) = rt.block_on(s3.remove_bucket(&bucket)) {
                tracing::warn!(%bucket, %error, "test bucket not removed");
            }
        });
        let _ = remover.join();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_credentials_out_of_the_url() {
        let s3 = TestS3::parse("http://key:secret@127.0.0.1:58014").expect("parse");
        assert_eq!(s3.endpoint, "http://127.0.0.1:58014");
        assert_eq!(s3.access_key_id, "key");
        assert_eq!(s3.secret_access_key, "secret");
        let options = s3.options();
        assert!(options.contains(&("AWS_ENDPOINT_URL".into(), "http://127.0.0.1:58014".into())));
        assert!(options.contains(&("AWS_ALLOW_HTTP".into(), "true".into())));
    }

    #[test]
    fn refuses_urls_without_credentials_or_host() {
        for bad in [
            "http://127.0.0.1:58014",
            "http://key@127.0.0.1:1",
            "s3://k:s@b",
            "nope",
        ] {
            match TestS3::parse(bad) {
                Err(S3TestError::BadEnv { value, .. }) => assert_eq!(value, bad),
                other => panic!("{bad} parsed as {other:?}"),
            }
        }
    }
}
