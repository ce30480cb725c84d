//! Writing key material to disk: whole files only (temp file + rename), keys readable by the
//! owner only, so a crash never leaves a half-written certificate and no other user reads a key.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::TlsError;

/// Mode for private keys.
pub(crate) const SECRET: u32 = 0o600;
/// Mode for certificates, which are public.
pub(crate) const PUBLIC: u32 = 0o644;

pub(crate) fn write_atomic(path: &Path, contents: &str, mode: u32) -> Result<(), TlsError> {
    let io = |action: &'static str, source| TlsError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    }
    let tmp = path.with_extension("tmp");
    // A leftover temp file from a crash may have the wrong mode; start from nothing.
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| io("create", e))?;
    file.write_all(contents.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("write", e))?;
    fs::rename(&tmp, path).map_err(|e| io("rename into place", e))?;
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<String, TlsError> {
    fs::read_to_string(path).map_err(|source| TlsError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The CA certificate's file name in a CA directory. The node side keeps its copy of the CA certificate under the
/// same name, so a manager's certificate directory holds one `root-ca.crt`.
pub(crate) const CA_CERT_FILE: &str = "root-ca.crt";
