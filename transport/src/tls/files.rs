//! Reading and writing PEM files: private keys written owner-only and atomically, and
//! refused at load when others can read them.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::error::TransportError;

pub(super) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TransportError + '_ {
    move |source| TransportError::Io { path: path.to_owned(), source }
}

/// Reads a text file.
pub(super) fn read_text(path: &Path) -> Result<String, TransportError> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Reads a private key file, refusing one that its group or others may read.
pub(super) fn read_private(path: &Path) -> Result<String, TransportError> {
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(TransportError::Tls(format!(
            "{}: a private key readable by group or others (mode {mode:03o}) is refused; run `chmod 600 {}`",
            path.display(),
            path.display()
        )));
    }
    read_text(path)
}

/// Writes `text` to `path` through a temporary file in the same dir and a rename, so a
/// reader sees the old file or the new one, never a part; private files are created 0600.
pub(super) fn write_atomic(path: &Path, text: &str, private: bool) -> Result<(), TransportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true).mode(if private { 0o600 } else { 0o644 });
    let result = (|| {
        let mut file = options.open(&tmp).map_err(io_err(&tmp))?;
        // A leftover temporary file of the same name keeps its mode: set it again.
        if private {
            file.set_permissions(std::fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
        }
        file.write_all(text.as_bytes()).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, path).map_err(io_err(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_owner_only_and_others_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        write_atomic(&key, "secret", true).unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(read_private(&key).unwrap(), "secret");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
        let error = read_private(&key).unwrap_err().to_string();
        assert!(error.contains("mode 640") && error.contains("chmod 600"), "{error}");
        // Rewriting makes it private again.
        write_atomic(&key, "new", true).unwrap();
        assert_eq!(read_private(&key).unwrap(), "new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
    }
}
