//! Files for tests: fresh directories under the target directory.

use std::path::Path;

/// A fresh directory under the target directory, removed at the start of the next run.
pub fn tempdir() -> std::path::PathBuf {
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let index = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let directory = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("config-test-{}-{index}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    directory
}
