//! Which devices this host has and which workers to start on them: one worker
//! per visible CUDA device, or one CPU worker when there is none.

use serde::Serialize;

use super::gpu::{GpuSource, nvml_index};

/// A CUDA device libtorch can use. Name and memory come from NVML (tch does
/// not expose them) and are None without it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CudaDevice {
    /// CUDA's index: what `--device cuda:N` takes.
    pub index: usize,
    pub name: Option<String>,
    pub memory_total_bytes: Option<u64>,
}

/// The `count` devices libtorch sees, described through `gpus`.
pub fn cuda_devices(
    count: usize,
    gpus: &dyn GpuSource,
    cuda_visible_devices: Option<&str>,
) -> Vec<CudaDevice> {
    (0..count)
        .map(|index| {
            let reading = nvml_index(index, cuda_visible_devices).and_then(|nvml| gpus.read(nvml));
            CudaDevice {
                index,
                name: reading.as_ref().and_then(|r| r.name.clone()),
                memory_total_bytes: reading.and_then(|r| r.memory_total_bytes),
            }
        })
        .collect()
}

/// The `--device` of each worker to start: `cuda:N` per device, else `cpu`.
pub fn worker_devices(devices: &[CudaDevice]) -> Vec<String> {
    if devices.is_empty() {
        return vec!["cpu".to_string()];
    }
    devices
        .iter()
        .map(|d| format!("cuda:{}", d.index))
        .collect()
}

/// What `--device auto` means: the first GPU when libtorch sees one.
pub fn auto_device(cuda_count: usize) -> &'static str {
    if cuda_count > 0 { "cuda:0" } else { "cpu" }
}

#[cfg(test)]
mod tests {
    use super::super::gpu::{FakeGpus, NoGpus};
    use super::*;

    #[test]
    fn one_cpu_worker_without_gpus() {
        assert_eq!(worker_devices(&cuda_devices(0, &NoGpus, None)), ["cpu"]);
        assert_eq!(auto_device(0), "cpu");
    }

    #[test]
    fn one_worker_per_gpu() {
        let devices = cuda_devices(2, &FakeGpus, None);
        assert_eq!(worker_devices(&devices), ["cuda:0", "cuda:1"]);
        assert_eq!(devices[1].name.as_deref(), Some("Fake GPU 1"));
        assert_eq!(devices[1].memory_total_bytes, Some(80 << 30));
        assert_eq!(auto_device(2), "cuda:0");
    }

    #[test]
    fn visible_devices_pick_the_nvml_gpu() {
        let devices = cuda_devices(1, &FakeGpus, Some("1"));
        assert_eq!(devices[0].index, 0);
        assert_eq!(devices[0].name.as_deref(), Some("Fake GPU 1"));
        assert_eq!(worker_devices(&devices), ["cuda:0"]);
    }

    #[test]
    fn gpus_without_nvml_still_get_workers() {
        let devices = cuda_devices(2, &NoGpus, None);
        assert_eq!(devices[0].name, None);
        assert_eq!(worker_devices(&devices), ["cuda:0", "cuda:1"]);
    }
}
