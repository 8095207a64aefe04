//! maelab-worker: trains MAE and Wave-MAE with libtorch through tch, on its own
//! (`maelab-worker train`) or as a queue worker against PostgreSQL (`run`).

pub mod allocator;
pub mod cli;
pub mod data;
pub mod doctor;
pub mod events;
pub mod metrics;
pub mod model;
pub mod queue;
pub mod system;
pub mod telemetry;
pub mod torch_ext;
pub mod train;
