//! `--device cpu|cuda|cuda:N`, checked against what libtorch sees.

use tch::Device;

use super::TrainError;

/// Parse a device name; CUDA names fail when CUDA or that GPU is missing.
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    let bad = |reason: String| TrainError::Device {
        name: name.to_string(),
        reason,
    };
    let device = match name.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => return Err(bad("expected cpu, cuda or cuda:N".to_string())),
        },
    };
    let count = tch::Cuda::device_count();
    match device {
        Device::Cuda(i) if (i as i64) < count => Ok(device),
        Device::Cuda(i) => Err(bad(format!(
            "GPU {i} requested but libtorch sees {count} CUDA device(s)"
        ))),
        _ => Ok(device),
    }
}
