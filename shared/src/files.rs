//! Files and folders that hold customers' data (the SQLite database, `DATA_DIR`, the WhatsApp
//! Web session): created readable by their owner only, 0700 folders and 0600 files, whatever
//! the process's umask, so another account on the host reads none of it.
//!
//! Only what a service creates is given these modes; existing files and folders keep theirs
//! (an operator may have opened them to a backup account on purpose). A startup warning names
//! any that others can read.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of the folders created for data.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the data files created.
pub const FILE_MODE: u32 = 0o600;

/// `create_dir_all`, every folder it creates 0700.
pub fn create_private_dir_all(path: &Path) -> io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)
}

/// Creates `path` empty and 0600 unless it exists (a race with another process creating it
/// is not an error).
pub fn create_private_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Logs a warning when `path` exists and its group or others may read, write or enter it.
pub fn warn_if_open(path: &Path, what: &str) {
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        let mode = meta.permissions().mode() & 0o777;
        tracing::warn!(
            path = %path.display(),
            mode = format!("{mode:o}"),
            "{what} is open to other accounts on this host: chmod go-rwx it"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_folders_and_files_are_owner_only_whatever_the_umask() {
        let root = std::env::temp_dir().join(format!("sb-files-{}", crate::ids::new_id()));
        let file = root.join("a/b/x.db");
        create_private_dir_all(file.parent().unwrap()).unwrap();
        create_private_file(&file).unwrap();
        create_private_file(&file).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&root), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        assert_eq!(mode(&root.join("a/b")), 0o700);
        assert_eq!(mode(&file), 0o600);
        std::fs::remove_dir_all(&root).unwrap();
    }
}
