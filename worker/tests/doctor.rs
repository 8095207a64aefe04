//! `maelab-worker doctor` runs without LD_LIBRARY_PATH (the rpath finds
//! libtorch) and reports the torch it loaded.

use std::process::Command;

#[test]
fn doctor_reports_torch_and_threads_without_ld_library_path() {
    let out = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
        .args(["doctor", "--json"])
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("run doctor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let version = report["torch_version"].as_str().expect("torch_version");
    assert!(version.starts_with("2.11.0"), "{version}");
    assert!(report["cpu_threads"].as_i64().expect("threads") >= 1);
    assert!(
        report["libtorch_path"]
            .as_str()
            .expect("path")
            .ends_with("libtorch_cpu.so")
    );
    let cuda = report["cuda_available"].as_bool().expect("cuda flag");
    assert_eq!(cuda, report["cuda_device_count"].as_i64() > Some(0));
    assert_eq!(report["malloc_tuned"], true);
}

#[test]
fn malloc_tunables_of_the_user_win() {
    for (key, value) in [
        ("MALLOC_CONF", "dirty_decay_ms:10000"),
        ("MALLOC_CONF", "narenas:2,dirty_decay_ms:0"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_maelab-worker"))
            .args(["doctor", "--json"])
            .env(key, value)
            .output()
            .expect("run doctor");
        assert!(out.status.success());
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(report["malloc_tuned"], false, "{key}={value}");
    }
}
