//! A local store in a fresh temporary directory, removed on drop: for tests
//! of both crates.

use std::path::PathBuf;

use super::{ArtifactStore, StoreError};

/// An [`ArtifactStore`] in its own temporary directory.
pub struct TempStore {
    pub store: ArtifactStore,
    pub dir: PathBuf,
}

impl TempStore {
    /// Create the directory and open a store in it.
    pub fn new() -> Result<Self, StoreError> {
        let dir = std::env::temp_dir().join(format!(
            "maelab-artifacts-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let store = ArtifactStore::open(&dir.display().to_string(), &[])?;
        Ok(Self { store, dir })
    }

    /// How many objects (files) the store holds.
    pub fn object_count(&self) -> usize {
        fn count(dir: &std::path::Path) -> usize {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| {
                            let path = e.path();
                            if path.is_dir() { count(&path) } else { 1 }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.dir)
    }
}

impl std::ops::Deref for TempStore {
    type Target = ArtifactStore;
    fn deref(&self) -> &ArtifactStore {
        &self.store
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
