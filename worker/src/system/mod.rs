//! What a worker reports about its machine with each heartbeat: the process's
//! CPU % and resident memory, and its GPU's NVML figures (none without NVML).

pub mod devices;
pub mod gpu;
pub mod process;

use std::time::Instant;

use maelab_core::db::worker_metrics::{GpuSample, SystemSample};

use gpu::GpuSource;

/// Takes [`SystemSample`]s; CPU % is the CPU time used since the previous one.
pub struct Sampler {
    gpus: Box<dyn GpuSource>,
    /// (CUDA index, NVML index) of the GPUs this worker trains on.
    devices: Vec<(usize, u32)>,
    last_cpu: Option<(Instant, f64)>,
}

impl Sampler {
    /// A sampler for a worker on CUDA device `cuda_index` (None: the CPU,
    /// which reports no GPU), reading GPUs through `gpus`.
    pub fn new(
        gpus: Box<dyn GpuSource>,
        cuda_index: Option<usize>,
        cuda_visible_devices: Option<&str>,
    ) -> Self {
        let devices = cuda_index
            .and_then(|cuda| gpu::nvml_index(cuda, cuda_visible_devices).map(|nvml| (cuda, nvml)))
            .into_iter()
            .collect();
        Self {
            gpus,
            devices,
            last_cpu: None,
        }
    }

    /// For this process on `device` (as `parse_device` gave it): NVML if it
    /// loads, `CUDA_VISIBLE_DEVICES` from the environment.
    pub fn for_device(device: tch::Device) -> Self {
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        Self::new(gpu::open(), cuda_index(device), visible.as_deref())
    }

    /// Read everything now.
    pub fn sample(&mut self) -> SystemSample {
        let now = Instant::now();
        let cpu = process::cpu_seconds();
        let cpu_percent = match (self.last_cpu, cpu) {
            (Some((then, used_then)), Some(used)) => {
                let wall = now.duration_since(then).as_secs_f64();
                (wall > 0.0).then(|| ((used - used_then) / wall * 100.0).max(0.0))
            }
            _ => None,
        };
        if let Some(used) = cpu {
            self.last_cpu = Some((now, used));
        }
        SystemSample {
            cpu_percent,
            rss_bytes: process::rss_bytes(),
            gpus: self
                .devices
                .iter()
                .filter_map(|&(cuda, nvml)| self.gpus.read(nvml).map(|r| to_sample(cuda, r)))
                .collect(),
        }
    }
}

fn cuda_index(device: tch::Device) -> Option<usize> {
    match device {
        tch::Device::Cuda(i) => Some(i),
        _ => None,
    }
}

/// The name of `device`'s GPU as NVML gives it (None on the CPU or without
/// NVML): what the worker's row and a study's calibration show.
pub fn gpu_name(device: tch::Device) -> Option<String> {
    let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
    let nvml = gpu::nvml_index(cuda_index(device)?, visible.as_deref())?;
    gpu::open().read(nvml)?.name
}

fn to_sample(cuda_index: usize, r: gpu::GpuReading) -> GpuSample {
    GpuSample {
        index: i32::try_from(cuda_index).unwrap_or(i32::MAX),
        name: r.name,
        utilization_percent: r.utilization_percent.map(f64::from),
        memory_used_bytes: r.memory_used_bytes.and_then(|b| i64::try_from(b).ok()),
        memory_total_bytes: r.memory_total_bytes.and_then(|b| i64::try_from(b).ok()),
        temperature_c: r.temperature_c.map(f64::from),
        power_watts: r.power_watts,
    }
}

#[cfg(test)]
mod tests {
    use super::gpu::{FakeGpus, NoGpus};
    use super::*;

    #[test]
    fn a_gpu_worker_reports_its_own_gpu() {
        let mut sampler = Sampler::new(Box::new(FakeGpus), Some(0), Some("1"));
        let sample = sampler.sample();
        assert_eq!(
            sample.gpus,
            [GpuSample {
                index: 0,
                name: Some("Fake GPU 1".into()),
                utilization_percent: Some(90.0),
                memory_used_bytes: Some(2 << 30),
                memory_total_bytes: Some(80 << 30),
                temperature_c: Some(65.0),
                power_watts: Some(350.5),
            }]
        );
        assert!(sample.rss_bytes.expect("rss") > 0);
    }

    #[test]
    fn cpu_workers_and_hosts_without_nvml_report_cpu_only() {
        let mut cpu = Sampler::new(Box::new(FakeGpus), None, None);
        assert!(cpu.sample().gpus.is_empty());
        let mut no_nvml = Sampler::new(Box::new(NoGpus), Some(0), None);
        let first = no_nvml.sample();
        assert!(first.gpus.is_empty());
        assert_eq!(first.cpu_percent, None, "a rate needs two readings");
        // Burn some CPU so the second reading has a rate.
        let start = Instant::now();
        let mut x = 0u64;
        while start.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let second = no_nvml.sample();
        assert!(second.cpu_percent.expect("a rate") > 0.0);
    }
}
