//! A scratch directory for a test's files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// A fresh directory under the system temp dir (named after the tag and the process), removed
/// with its contents when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/pagoda-TAG-PID`, emptied first if it exists.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("pagoda-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDir(dir)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The names of the files in the directory, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", self.0.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
