//! The subcommands of `maelab-worker`, one module each.

pub mod bench;
pub mod bench_augment;
pub mod bench_store;
pub mod data;
pub mod doctor;
pub mod queue_bench;
pub mod run;
pub mod train;
