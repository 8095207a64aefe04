//! GPU readings through NVML, behind [`GpuSource`] so the sampling logic is
//! tested with a fake. NVML (`libnvidia-ml`) is loaded at run time: a host
//! without it gets [`NoGpus`] and reports CPU figures only.

use serde::Serialize;

/// One GPU as NVML sees it at one moment. A figure the driver does not
/// report (power on some boards) is None rather than an error.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GpuReading {
    /// NVML's index (PCI bus order).
    pub nvml_index: u32,
    pub name: Option<String>,
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_c: Option<u32>,
    pub power_watts: Option<f64>,
}

/// Something that reads GPUs by NVML index.
pub trait GpuSource: Send {
    /// How many GPUs the driver sees (0 without NVML).
    fn count(&self) -> u32;
    /// Read one GPU; None when it cannot be read at all.
    fn read(&self, nvml_index: u32) -> Option<GpuReading>;
}

/// No NVML on this host: no GPUs to report.
pub struct NoGpus;

impl GpuSource for NoGpus {
    fn count(&self) -> u32 {
        0
    }
    fn read(&self, _: u32) -> Option<GpuReading> {
        None
    }
}

/// NVML loaded from `libnvidia-ml`.
pub struct NvmlGpus(nvml_wrapper::Nvml);

impl GpuSource for NvmlGpus {
    fn count(&self) -> u32 {
        self.0.device_count().unwrap_or(0)
    }

    fn read(&self, nvml_index: u32) -> Option<GpuReading> {
        let device = self.0.device_by_index(nvml_index).ok()?;
        let memory = device.memory_info().ok();
        Some(GpuReading {
            nvml_index,
            name: device.name().ok(),
            utilization_percent: device.utilization_rates().ok().map(|u| u.gpu),
            memory_used_bytes: memory.as_ref().map(|m| m.used),
            memory_total_bytes: memory.as_ref().map(|m| m.total),
            temperature_c: device
                .temperature(nvml_wrapper::enum_wrappers::device::TemperatureSensor::Gpu)
                .ok(),
            // NVML reports milliwatts.
            power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        })
    }
}

/// NVML when the library loads, else [`NoGpus`] (logged once, not an error:
/// CPU hosts have no driver).
pub fn open() -> Box<dyn GpuSource> {
    match nvml_wrapper::Nvml::init() {
        Ok(nvml) => Box::new(NvmlGpus(nvml)),
        Err(e) => {
            tracing::debug!(error = %e, "NVML not available; reporting CPU figures only");
            Box::new(NoGpus)
        }
    }
}

/// The NVML index of CUDA device `cuda_index`. CUDA numbers only the devices
/// in `CUDA_VISIBLE_DEVICES` (when set to indices); `scripts/start` sets
/// `CUDA_DEVICE_ORDER=PCI_BUS_ID` so CUDA's order is NVML's. A list of UUIDs
/// is not mapped (None: the worker reports no GPU rather than a wrong one).
pub fn nvml_index(cuda_index: usize, cuda_visible_devices: Option<&str>) -> Option<u32> {
    match cuda_visible_devices.map(str::trim) {
        None | Some("") => u32::try_from(cuda_index).ok(),
        Some(list) => list
            .split(',')
            .nth(cuda_index)
            .and_then(|s| s.trim().parse().ok()),
    }
}

/// Two GPUs with NVML indices 0 and 1, for unit tests: GPU `i` reads
/// `40 + 50 i` % busy with `i + 1` GiB used of 80.
#[cfg(test)]
pub(crate) struct FakeGpus;

#[cfg(test)]
impl GpuSource for FakeGpus {
    fn count(&self) -> u32 {
        2
    }
    fn read(&self, nvml_index: u32) -> Option<GpuReading> {
        (nvml_index < 2).then(|| GpuReading {
            nvml_index,
            name: Some(format!("Fake GPU {nvml_index}")),
            utilization_percent: Some(40 + nvml_index * 50),
            memory_used_bytes: Some(u64::from(nvml_index + 1) << 30),
            memory_total_bytes: Some(80 << 30),
            temperature_c: Some(65),
            power_watts: Some(350.5),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_index_maps_through_visible_devices() {
        assert_eq!(nvml_index(1, None), Some(1));
        assert_eq!(nvml_index(0, Some("")), Some(0));
        assert_eq!(nvml_index(0, Some("3,1")), Some(3));
        assert_eq!(nvml_index(1, Some("3, 1")), Some(1));
        assert_eq!(nvml_index(2, Some("3,1")), None);
        assert_eq!(nvml_index(0, Some("GPU-1234abcd")), None);
    }
}
