//! Finding (and building, once per test process) the `jobd` and `jobctl` binaries.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Paths of the binaries under test.
#[derive(Debug, Clone)]
pub struct Bins {
    pub jobd: PathBuf,
    pub jobctl: PathBuf,
}

/// The binaries, built and fresh. The first call builds them (see the crate docs).
/// A failed build is remembered, so that the other tests of the process fail at once
/// with the same message instead of building again.
pub fn bins() -> &'static Bins {
    static BINS: OnceLock<Result<Bins, String>> = OnceLock::new();
    match BINS.get_or_init(|| {
        std::panic::catch_unwind(locate_and_build).map_err(|e| {
            e.downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "locating the binaries failed".to_string())
        })
    }) {
        Ok(bins) => bins,
        Err(msg) => panic!("{msg}"),
    }
}

fn locate_and_build() -> Bins {
    if let Some(dir) = env::var_os("JOBD_BIN_DIR").filter(|d| !d.is_empty()) {
        return checked(Path::new(&dir));
    }
    let exe = env::current_exe().expect("path of the test executable");
    // Integration tests live in <target>/<profile>/deps/<name>-<hash>.
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable is not under <target>/<profile>/deps")
        .to_path_buf();
    let skip = env::var_os("JOBD_TESTS_NO_BUILD").is_some_and(|v| !v.is_empty() && v != "0");
    if !skip {
        if let Some(cargo) = env::var_os("CARGO") {
            build(Path::new(&cargo), &profile_dir);
        }
    }
    checked(&profile_dir)
}

/// `cargo build -p jobd -p jobd-cli` into the test's own target directory and profile.
/// Cargo releases its build-directory lock before it runs test executables, so this
/// nested build does not wait on the `cargo test` that started us.
fn build(cargo: &Path, profile_dir: &Path) {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace");
    let target_dir = profile_dir
        .parent()
        .expect("the profile directory sits in a target directory");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", "jobd", "-p", "jobd-cli", "--bins"])
        .arg("--target-dir")
        .arg(target_dir);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cargo.display()));
    assert!(
        out.status.success(),
        "building jobd and jobctl failed ({:?}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn checked(dir: &Path) -> Bins {
    let bins = Bins {
        jobd: dir.join("jobd"),
        jobctl: dir.join("jobctl"),
    };
    for b in [&bins.jobd, &bins.jobctl] {
        assert!(
            b.is_file(),
            "{} is missing: build it first (cargo build --workspace)",
            b.display()
        );
    }
    bins
}
