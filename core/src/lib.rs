//! maelab-core: the pieces both the server (no libtorch) and the workers (tch) need.
//!
//! - [`config`]: the run config, its presets and its validation, so a run that the
//!   server accepts is exactly a run that a worker can train.
//! - [`db`]: the PostgreSQL schema (migrations), the queue's statements and the
//!   metric/artifact writes, each fenced by the job's lease token.
//! - [`study`]: study documents, their expansion into chains, and their statistics.

pub mod config;
pub mod db;
pub mod study;

pub use config::{ConfigError, ConfigErrors, RunConfig};
