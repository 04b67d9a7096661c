//! Which clusters a running meshcheck owns: each run that creates a cluster holds an exclusive lock
//! on a file named after it for as long as the process lives (the kernel drops it when the process
//! ends, however it ends), so that `meshcheck gc --delete` can tell a leftover from a cluster a run
//! is still using.

use std::{fs::File, path::PathBuf};

/// Where the lock files are: the temporary folder, as the runs and `gc` of one user see it.
fn lock_path(cluster: &str) -> PathBuf {
    std::env::temp_dir().join("meshcheck-live").join(format!("{cluster}.lock"))
}

/// Held while a run uses its cluster; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct ClusterLock {
    _file: File,
}

/// Takes the lock of `cluster` for this process.
pub fn hold(cluster: &str) -> std::io::Result<ClusterLock> {
    let path = lock_path(cluster);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = File::options().create(true).truncate(false).write(true).open(&path)?;
    file.try_lock().map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
    Ok(ClusterLock { _file: file })
}

/// Whether a running meshcheck holds the lock of `cluster`.
pub fn in_use(cluster: &str) -> bool {
    let Ok(file) = File::options().write(true).open(lock_path(cluster)) else { return false };
    matches!(file.try_lock(), Err(std::fs::TryLockError::WouldBlock))
}
