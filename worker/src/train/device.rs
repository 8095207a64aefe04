//! `--device auto|cpu|cuda|cuda:N`, checked against what libtorch sees.

use tch::Device;

use super::TrainError;

/// `auto` becomes `cuda:0` when libtorch sees a GPU, else `cpu`; any other
/// name is returned as given (trimmed), so logs and the worker row name the
/// device actually used.
pub fn resolve_auto(name: &str) -> String {
    match name.trim() {
        "auto" => {
            let count = if tch::Cuda::is_available() {
                tch::Cuda::device_count()
            } else {
                0
            };
            crate::system::devices::auto_device(usize::try_from(count).unwrap_or(0)).to_string()
        }
        other => other.to_string(),
    }
}

/// Parse a device name (`auto` as [`resolve_auto`]); CUDA names fail when CUDA or that GPU is missing.
pub fn parse_device(name: &str) -> Result<Device, TrainError> {
    let bad = |reason: String| TrainError::Device {
        name: name.to_string(),
        reason,
    };
    let device = match resolve_auto(name).as_str() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => return Err(bad("expected auto, cpu, cuda or cuda:N".to_string())),
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
