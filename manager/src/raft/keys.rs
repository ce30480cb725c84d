//! The Raft log's key files: the data key (DEK) that seals the log and snapshots, kept in
//! `<raft dir>/dek` wrapped by a key-encryption key (KEK), as Swarm keeps its raft DEK.
//!
//! Without autolock the KEK is random and kept beside it in `<raft dir>/kek` (0600): the log is
//! then readable by whoever reads the whole data directory, exactly as Swarm's is, but not by
//! someone holding only the log file or a backup of it. With autolock the KEK is derived from
//! the cluster's unlock key (`SWMKEY-1-…`), which never touches disk: a restarted manager cannot
//! read its log until someone gives it the key ([`open_data_key`] with it).
//!
//! `dek` is `"SHOALDEK" || version 1 || wrapping (0: kek file, 1: unlock key) || sealed DEK`;
//! the header is the sealed DEK's associated data, so it cannot be changed unnoticed. Every
//! write is atomic: a temporary file (0600), fsynced, renamed over the old one.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use ring::hkdf;

use super::cipher::{random, CipherError, DataKey, KEY_LEN};

/// The wrapped data key's file name in the Raft directory.
pub const DEK_FILE: &str = "dek";
/// The random key-encryption key's file name (absent with autolock).
pub const KEK_FILE: &str = "kek";

const MAGIC: &[u8; 8] = b"SHOALDEK";
const VERSION: u8 = 1;
const HEADER_LEN: usize = MAGIC.len() + 2;
const UNLOCK_KEY_PREFIX: &str = "SWMKEY-1-";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot use the raft key file {path}: {source}; check that it exists and is readable and writable by shoal")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refuse to start: the raft key file {path} is damaged ({reason}); without it the raft log cannot be read")]
    Corrupt { path: PathBuf, reason: String },
    #[error("refuse to start: the raft log in {dir} has no key file `dek`; without it the log cannot be read. Restore the file, or move the directory away to start a new swarm")]
    Missing { dir: PathBuf },
    #[error("invalid key, unable to unlock swarm")]
    WrongKey,
    #[error("the swarm is locked: its raft log is encrypted with the unlock key; run `shoal swarm unlock` with it")]
    Locked,
    #[error("invalid unlock key: {0}; an unlock key looks like SWMKEY-1-<base64>, as `shoal swarm unlock-key` prints it")]
    Malformed(String),
    #[error(transparent)]
    Cipher(#[from] CipherError),
}

/// A cluster's unlock key (`SWMKEY-1-` + base64 of 32 random bytes). `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct UnlockKey([u8; KEY_LEN]);

impl std::fmt::Debug for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnlockKey([REDACTED])")
    }
}

impl std::fmt::Display for UnlockKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(self.0);
        write!(f, "{UNLOCK_KEY_PREFIX}{encoded}")
    }
}

impl std::str::FromStr for UnlockKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, KeyError> {
        let s = s.trim();
        let body = s.strip_prefix(UNLOCK_KEY_PREFIX).ok_or_else(|| {
            KeyError::Malformed(format!("it does not start with {UNLOCK_KEY_PREFIX}"))
        })?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| KeyError::Malformed(format!("its body is not base64 ({e})")))?;
        let bytes: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| {
            KeyError::Malformed(format!("it holds {} bytes, not {KEY_LEN}", b.len()))
        })?;
        Ok(UnlockKey(bytes))
    }
}

impl UnlockKey {
    pub fn generate() -> Result<Self, KeyError> {
        let mut raw = [0u8; KEY_LEN];
        random(&mut raw)?;
        Ok(UnlockKey(raw))
    }

    /// The key-encryption key it stands for (HKDF-SHA256, so the unlock key itself is never
    /// used as a cipher key).
    fn kek(&self) -> DataKey {
        struct Len;
        impl hkdf::KeyType for Len {
            fn len(&self) -> usize {
                KEY_LEN
            }
        }
        let mut out = [0u8; KEY_LEN];
        hkdf::Salt::new(hkdf::HKDF_SHA256, b"shoal raft key-encryption key")
            .extract(&self.0)
            .expand(&[b"kek"], Len)
            .and_then(|okm| okm.fill(&mut out))
            // Only an output longer than 255 hash lengths fails.
            .expect("a 32-byte HKDF output");
        DataKey::from_bytes(out)
    }
}

/// How the data key is wrapped on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapping {
    /// With the random KEK in `kek`: the log opens without anyone's help.
    KekFile,
    /// With the unlock key: the manager waits for `shoal swarm unlock`.
    UnlockKey,
}

/// How `dir`'s data key is wrapped, or `None` when it has none yet (a new Raft directory).
pub fn wrapping(dir: &Path) -> Result<Option<Wrapping>, KeyError> {
    let path = dir.join(DEK_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => Ok(Some(parse_dek(&path, &bytes)?.0)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

/// Whether `dir`'s log waits for the unlock key.
pub fn is_locked(dir: &Path) -> Result<bool, KeyError> {
    Ok(wrapping(dir)? == Some(Wrapping::UnlockKey))
}

/// The data key of the log in `dir`, unwrapped with the `kek` file or with `unlock` (as the
/// `dek` file says). A directory with no log yet gets a new data key, wrapped with `unlock`
/// when given, else with a new random KEK.
pub fn open_data_key(
    dir: &Path,
    unlock: Option<&UnlockKey>,
    has_log: bool,
) -> Result<DataKey, KeyError> {
    let path = dir.join(DEK_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !has_log => {
            std::fs::create_dir_all(dir).map_err(|source| KeyError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
            let dek = DataKey::generate()?;
            wrap_data_key(dir, &dek, unlock)?;
            return Ok(dek);
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyError::Missing {
                dir: dir.to_path_buf(),
            })
        }
        Err(source) => return Err(KeyError::Io { path, source }),
    };
    let (how, header, sealed) = parse_dek(&path, &bytes)?;
    let kek = match how {
        Wrapping::UnlockKey => unlock.ok_or(KeyError::Locked)?.kek(),
        Wrapping::KekFile => read_kek(dir)?,
    };
    let raw = kek.open(sealed, header).map_err(|_| match how {
        Wrapping::UnlockKey => KeyError::WrongKey,
        Wrapping::KekFile => KeyError::Corrupt {
            path: path.clone(),
            reason: "it does not open with the key in `kek`".into(),
        },
    })?;
    let raw: [u8; KEY_LEN] = raw.try_into().map_err(|_| KeyError::Corrupt {
        path,
        reason: "the data key has the wrong length".into(),
    })?;
    Ok(DataKey::from_bytes(raw))
}

/// Wraps `dek` anew: with `unlock` (then `kek` is deleted: the KEK exists only as the unlock
/// key), or with a new random KEK written to `kek`. Each file is replaced atomically, in an
/// order where a crash leaves a `dek` that still opens.
pub fn wrap_data_key(
    dir: &Path,
    dek: &DataKey,
    unlock: Option<&UnlockKey>,
) -> Result<(), KeyError> {
    let Some(key) = unlock else {
        // Already wrapped with the `kek` file: keep that KEK (a new one would leave a window
        // where the two files disagree).
        let kek = if wrapping(dir)? == Some(Wrapping::KekFile) {
            read_kek(dir)?
        } else {
            // The old `dek` (if any) opens with the unlock key it names, so a crash between
            // these two writes leaves it usable.
            let kek = DataKey::generate()?;
            write_atomic(&dir.join(KEK_FILE), kek.bytes())?;
            kek
        };
        return write_dek(dir, dek, Wrapping::KekFile, &kek);
    };
    write_dek(dir, dek, Wrapping::UnlockKey, &key.kek())?;
    let path = dir.join(KEK_FILE);
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

fn write_dek(dir: &Path, dek: &DataKey, how: Wrapping, kek: &DataKey) -> Result<(), KeyError> {
    let mut out = header(how).to_vec();
    let sealed = kek.seal(dek.bytes(), &out)?;
    out.extend_from_slice(&sealed);
    write_atomic(&dir.join(DEK_FILE), &out)
}

fn header(how: Wrapping) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..MAGIC.len()].copy_from_slice(MAGIC);
    h[MAGIC.len()] = VERSION;
    h[MAGIC.len() + 1] = match how {
        Wrapping::KekFile => 0,
        Wrapping::UnlockKey => 1,
    };
    h
}

/// `dek`'s wrapping, header and sealed key.
fn parse_dek<'a>(path: &Path, bytes: &'a [u8]) -> Result<(Wrapping, &'a [u8], &'a [u8]), KeyError> {
    let corrupt = |reason: &str| KeyError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("it is not a shoal data key file"));
    }
    if bytes[MAGIC.len()] != VERSION {
        return Err(corrupt(&format!(
            "it has version {}, this shoal reads version {VERSION}",
            bytes[MAGIC.len()]
        )));
    }
    let how = match bytes[MAGIC.len() + 1] {
        0 => Wrapping::KekFile,
        1 => Wrapping::UnlockKey,
        other => return Err(corrupt(&format!("unknown key wrapping {other}"))),
    };
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    Ok((how, header, sealed))
}

fn read_kek(dir: &Path) -> Result<DataKey, KeyError> {
    let path = dir.join(KEK_FILE);
    let bytes = std::fs::read(&path).map_err(|source| KeyError::Io {
        path: path.clone(),
        source,
    })?;
    let raw: [u8; KEY_LEN] = bytes.try_into().map_err(|_| KeyError::Corrupt {
        path,
        reason: format!("a key-encryption key is {KEY_LEN} bytes"),
    })?;
    Ok(DataKey::from_bytes(raw))
}

/// Writes `bytes` to `path` atomically: a private temporary file, fsynced, renamed over it,
/// and the directory fsynced so the rename survives a crash.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| KeyError::Io { path: p, source }
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    // Whatever the umask made of the mode.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
