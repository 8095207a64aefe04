//! `maelab-worker doctor`: what libtorch this binary runs with and what it sees.

use std::path::PathBuf;

use serde::Serialize;

use crate::system::devices::{self, CudaDevice};

/// The facts a worker reports about its libtorch and devices.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub torch_version: String,
    pub libtorch_path: Option<String>,
    pub cuda_available: bool,
    pub cuda_device_count: i64,
    /// Each device libtorch sees, with NVML's name and memory when it loads.
    pub cuda_devices: Vec<CudaDevice>,
    /// The `--device` of each worker `scripts/start` starts here.
    pub worker_devices: Vec<String>,
    pub cudnn_available: bool,
    pub cpu_threads: i32,
    /// Whether freed memory stays in the heap between steps
    /// (`crate::allocator`); false when the user's `MALLOC_CONF` turned purging on.
    pub malloc_tuned: bool,
}

/// Ask libtorch.
pub fn report() -> Report {
    let cuda_available = tch::Cuda::is_available();
    let cuda_device_count = if cuda_available {
        tch::Cuda::device_count()
    } else {
        0
    };
    let cuda_devices = devices::cuda_devices(
        usize::try_from(cuda_device_count).unwrap_or(0),
        crate::system::gpu::open().as_ref(),
        std::env::var("CUDA_VISIBLE_DEVICES").ok().as_deref(),
    );
    Report {
        torch_version: torch_version(),
        libtorch_path: loaded_libtorch().map(|p| p.display().to_string()),
        cuda_available,
        cuda_device_count,
        worker_devices: devices::worker_devices(&cuda_devices),
        cuda_devices,
        cudnn_available: cuda_available && tch::Cuda::cudnn_is_available(),
        cpu_threads: tch::get_num_threads(),
        malloc_tuned: crate::allocator::applied(),
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "torch version:     {}", self.torch_version)?;
        writeln!(
            f,
            "libtorch:          {}",
            self.libtorch_path.as_deref().unwrap_or("unknown")
        )?;
        writeln!(f, "cuda available:    {}", self.cuda_available)?;
        writeln!(f, "cuda devices:      {}", self.cuda_device_count)?;
        for d in &self.cuda_devices {
            let memory = d
                .memory_total_bytes
                .map(|b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)))
                .unwrap_or_else(|| "memory unknown".into());
            let name = d.name.as_deref().unwrap_or("name unknown (no NVML)");
            writeln!(f, "  cuda:{}           {name}, {memory}", d.index)?;
        }
        writeln!(f, "cudnn available:   {}", self.cudnn_available)?;
        writeln!(f, "cpu threads:       {}", self.cpu_threads)?;
        let malloc = if self.malloc_tuned {
            "jemalloc, freed memory kept between steps"
        } else {
            "jemalloc, purging as the user's MALLOC_CONF says"
        };
        write!(f, "malloc:            {malloc}")
    }
}

/// The version of the libtorch this process loaded (read from the `torch`
/// package that holds it), else the one it was built against.
pub fn torch_version() -> String {
    loaded_libtorch()
        .and_then(|lib| {
            let text = std::fs::read_to_string(lib.parent()?.parent()?.join("version.py")).ok()?;
            let line = text.lines().find(|l| l.starts_with("__version__"))?;
            Some(line.split('\'').nth(1)?.to_string())
        })
        .or_else(|| option_env!("MAELAB_BUILT_TORCH_VERSION").map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}

/// Where `libtorch_cpu.so` was mapped from, per /proc/self/maps.
fn loaded_libtorch() -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cpu.so"))
        .map(PathBuf::from)
}
