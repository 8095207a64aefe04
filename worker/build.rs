//! Finds the libtorch the worker was built against and makes the binary find it
//! again at run time: an rpath to its lib folder, so no LD_LIBRARY_PATH is needed,
//! and `libtorch_cuda.so` linked with --no-as-needed where it exists, because the
//! linker would otherwise drop it (nothing references it by symbol) and CUDA
//! would silently be unavailable. It also compiles csrc/torch_ext.cpp (what tch
//! does not bind, see src/torch_ext.rs) against the same libtorch's headers.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rerun-if-env-changed=PYTHON_SYS_EXECUTABLE");
    let Some(lib_dir) = libtorch_lib_dir() else {
        println!(
            "cargo:warning=libtorch not found: set LIBTORCH_USE_PYTORCH=1 with the project's .venv active (scripts/setup does this)"
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    compile_torch_ext(&lib_dir);
    if let Some(version) = torch_version(&lib_dir) {
        println!("cargo:rustc-env=MAELAB_BUILT_TORCH_VERSION={version}");
    }
    if lib_dir.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}

fn libtorch_lib_dir() -> Option<PathBuf> {
    if let Ok(dir) = std::env::var("LIBTORCH") {
        return Some(PathBuf::from(dir).join("lib"));
    }
    let python = std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into());
    let out = Command::new(python)
        .args([
            "-c",
            "import os, torch; print(os.path.join(os.path.dirname(torch.__file__), 'lib'))",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
    dir.is_dir().then_some(dir)
}

/// csrc/torch_ext.cpp into a static library, with the flags torch-sys compiles
/// its own C++ with (C++17, libtorch's C++11 ABI setting, `LIBTORCH_CXX11_ABI`
/// as torch-sys reads it, default 1 as in the 2.x wheels); libtorch itself is
/// linked by torch-sys.
fn compile_torch_ext(lib_dir: &std::path::Path) {
    println!("cargo:rerun-if-changed=csrc/torch_ext.cpp");
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let Some(root) = lib_dir.parent() else {
        return;
    };
    let include = root.join("include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .std("c++17")
        .warnings(false)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .file("csrc/torch_ext.cpp")
        .compile("maelab_torch_ext");
}

/// `torch/version.py` beside `torch/lib` holds `__version__ = '2.11.0+cu130'`.
fn torch_version(lib_dir: &std::path::Path) -> Option<String> {
    let text = std::fs::read_to_string(lib_dir.parent()?.join("version.py")).ok()?;
    let line = text.lines().find(|l| l.starts_with("__version__"))?;
    Some(line.split('\'').nth(1)?.to_string())
}
