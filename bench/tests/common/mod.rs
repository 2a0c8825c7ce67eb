//! What the bench's test binaries share.

use std::path::PathBuf;

/// The `ferry` binary next to this test's target directory (`cargo test
/// --workspace` builds it for the control crate's tests).
#[allow(clippy::unwrap_used)]
pub fn ferry() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let f = dir.join("ferry");
    assert!(
        f.exists(),
        "{} not built: run cargo build -p ferry first",
        f.display()
    );
    f
}
