//! Files only Postern's own user may read: the database and the key-encryption key. They are created
//! owner-only (files 0600, directories 0700), and Postern refuses to start when an existing one is
//! readable by others, since on a JupyterHub host every Hub user may have a shell.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Permission bits that let anyone but the owner read or write.
const OTHERS: u32 = 0o077;

/// Creates `dir` and its missing parents owner-only; an existing directory is left as it is.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() || dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Creates `path` empty and owner-only if it does not exist (with its directory), so that whatever
/// opens it next keeps those permissions.
pub fn create_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    match OpenOptions::new().write(true).create_new(true).mode(0o600).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to a new owner-only file, replacing `path` atomically (write, sync, rename).
pub fn write(path: &Path, contents: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let temporary = path.with_extension("new");
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    fs::rename(&temporary, path)
}

/// Creates `path` owner-only with `contents` unless it exists (false then), atomically: another
/// process creating it at the same moment either wins whole or finds this one's whole file.
pub fn create_new(path: &Path, contents: &[u8]) -> io::Result<bool> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let temporary = path.with_extension(format!("new.{}", std::process::id()));
    let _ = fs::remove_file(&temporary);
    let mut file = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&temporary)?;
    file.write_all(contents)?;
    file.sync_all()?;
    let linked = fs::hard_link(&temporary, path);
    fs::remove_file(&temporary)?;
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fails with what to run when an existing file can be read or written by others than its owner.
pub fn check(path: &Path) -> Result<(), String> {
    let Ok(meta) = fs::metadata(path) else { return Ok(()) };
    let mode = meta.permissions().mode();
    if mode & OTHERS != 0 {
        return Err(format!(
            "{} can be read by other users (mode {:o}); it holds secrets. Run: chmod 600 {}",
            path.display(),
            mode & 0o777,
            path.display()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_owner_only_and_refused_when_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("data/postern.db");
        create_file(&nested).unwrap();
        assert_eq!(fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(fs::metadata(nested.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(check(&nested).is_ok());
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o644)).unwrap();
        let refused = check(&nested).unwrap_err();
        assert!(refused.contains("chmod 600") && refused.contains("postern.db"), "{refused}");
        assert!(!create_new(&nested, b"other").unwrap(), "an existing file is kept");
        write(&nested, b"x").unwrap();
        assert_eq!(fs::metadata(&nested).unwrap().permissions().mode() & 0o777, 0o600, "replaced owner-only");
        assert!(check(&dir.path().join("absent")).is_ok());
    }
}
