//! maelab-server: the web pages, the REST API and the `maelab` CLI. It reads
//! and writes PostgreSQL through `maelab-core` and never links libtorch.

pub mod auth;
pub mod change_clock;
pub mod cli;
pub mod embedded_pg;
pub mod format;
pub mod http;
pub mod ingest_writer;
pub mod live;
pub mod read_model;
pub mod serve;
pub mod settings;
pub mod telemetry;
