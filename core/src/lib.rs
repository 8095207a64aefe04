//! maelab-core: the pieces both the server (no libtorch) and the workers (tch) need.
//!
//! - [`config`]: the run config, its presets and its validation, so a run that the
//!   server accepts is exactly a run that a worker can train.
//! - [`db`]: the PostgreSQL schema (migrations), the queue's statements and the
//!   metric/artifact writes, each fenced by the job's lease token.
//! - [`s3_testing`]: fresh buckets on the test S3 server, as `db::testing` gives databases.
//! - [`artifact_store`]: artifact bytes in a local directory or an S3 bucket.
//! - [`study`]: study documents, their expansion into chains, and their statistics.

pub mod artifact_store;
pub mod config;
pub mod db;
pub mod s3_testing;
pub mod study;

pub use config::{ConfigError, ConfigErrors, RunConfig};
