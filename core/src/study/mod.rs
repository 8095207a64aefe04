//! Studies: groups of runs that answer one question (is Wave-MAE better than
//! MAE?) across seeds at equal compute (studies.md).
//!
//! - [`spec`]: the submitted document, its checks and its expansion into
//!   chains (arm x seed), and the seconds-to-epochs conversion of a budget;
//! - [`stats`]: per-arm summaries and arm-vs-baseline comparisons with
//!   bootstrap intervals, Welch's t-test and the probability of improvement.

pub mod spec;
pub mod stats;

pub use spec::{Arm, Budget, Chain, ExpandedStudy, StageSize, Stages, StudySpec};
