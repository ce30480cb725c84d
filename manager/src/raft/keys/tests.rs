//! Unit tests of the key files: wrapping with the `kek` file and with an unlock key, rewrapping,
//! wrong and malformed keys, and what reaches the disk.

use super::*;

fn dir_contains(dir: &Path, needle: &[u8]) -> bool {
    std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .any(|e| {
            let bytes = std::fs::read(e.path()).unwrap_or_default();
            bytes.windows(needle.len()).any(|w| w == needle)
        })
}

#[test]
fn a_new_directory_gets_a_data_key_wrapped_by_a_kek_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(wrapping(dir.path()).expect("wrapping"), None);
    let dek = open_data_key(dir.path(), None, false).expect("new key");
    assert_eq!(
        wrapping(dir.path()).expect("wrapping"),
        Some(Wrapping::KekFile)
    );
    assert!(!is_locked(dir.path()).expect("locked?"));
    assert!(dir.path().join(KEK_FILE).exists());
    // The data key itself is never on disk in the clear.
    assert!(!dir_contains(dir.path(), dek.bytes()));
    let again = open_data_key(dir.path(), None, true).expect("reopen");
    assert_eq!(again.bytes(), dek.bytes());
}

#[test]
fn autolock_keeps_the_kek_off_disk_and_needs_the_unlock_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dek = open_data_key(dir.path(), None, false).expect("new key");
    let unlock = UnlockKey::generate().expect("unlock key");
    wrap_data_key(dir.path(), &dek, Some(&unlock)).expect("lock");
    assert!(is_locked(dir.path()).expect("locked?"));
    assert!(!dir.path().join(KEK_FILE).exists(), "kek left on disk");
    assert!(!dir_contains(dir.path(), &unlock.0));
    assert!(!dir_contains(dir.path(), unlock.to_string().as_bytes()));
    assert!(!dir_contains(dir.path(), unlock.kek().bytes()));

    // No key, a wrong key: refused with what to do; the files do not change.
    let before = std::fs::read(dir.path().join(DEK_FILE)).expect("dek");
    let err = open_data_key(dir.path(), None, true).expect_err("locked");
    assert!(matches!(err, KeyError::Locked), "{err}");
    assert!(err.to_string().contains("shoal swarm unlock"), "{err}");
    let wrong = UnlockKey::generate().expect("unlock key");
    let err = open_data_key(dir.path(), Some(&wrong), true).expect_err("wrong key");
    assert_eq!(err.to_string(), "invalid key, unable to unlock swarm");
    assert_eq!(
        std::fs::read(dir.path().join(DEK_FILE)).expect("dek"),
        before
    );

    let opened = open_data_key(dir.path(), Some(&unlock), true).expect("unlock");
    assert_eq!(opened.bytes(), dek.bytes());

    // Rotation: the new key opens it, the old one no longer does.
    let rotated = UnlockKey::generate().expect("unlock key");
    wrap_data_key(dir.path(), &dek, Some(&rotated)).expect("rotate");
    assert!(open_data_key(dir.path(), Some(&unlock), true).is_err());
    assert!(open_data_key(dir.path(), Some(&rotated), true).is_ok());

    // Autolock off: a new random KEK in `kek`, and no key needed.
    wrap_data_key(dir.path(), &dek, None).expect("unlock for good");
    assert!(!is_locked(dir.path()).expect("locked?"));
    let opened = open_data_key(dir.path(), None, true).expect("open without key");
    assert_eq!(opened.bytes(), dek.bytes());
    // Wrapping again without a key keeps that KEK.
    let kek = std::fs::read(dir.path().join(KEK_FILE)).expect("kek");
    wrap_data_key(dir.path(), &dek, None).expect("rewrap");
    assert_eq!(std::fs::read(dir.path().join(KEK_FILE)).expect("kek"), kek);
}

#[test]
fn unlock_keys_print_and_parse_as_swarm_and_never_debug() {
    let key = UnlockKey::generate().expect("unlock key");
    let text = key.to_string();
    assert!(text.starts_with("SWMKEY-1-"), "{text}");
    assert_eq!(text.len(), "SWMKEY-1-".len() + 43);
    assert_eq!(text.parse::<UnlockKey>().expect("parse"), key);
    assert_eq!(
        format!(" {text}\n").parse::<UnlockKey>().expect("trimmed"),
        key
    );
    assert_eq!(format!("{key:?}"), "UnlockKey([REDACTED])");
    for (bad, says) in [
        ("", "does not start with SWMKEY-1-"),
        ("SHOAL-1-abc", "does not start with SWMKEY-1-"),
        ("SWMKEY-1-!!!", "not base64"),
        ("SWMKEY-1-AAAA", "holds 3 bytes, not 32"),
    ] {
        let err = bad.parse::<UnlockKey>().expect_err(bad);
        let msg = err.to_string();
        assert!(msg.contains(says), "{bad}: {msg}");
        assert!(msg.contains("shoal swarm unlock-key"), "{bad}: {msg}");
    }
}

#[test]
fn damaged_key_files_are_refused_with_their_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    open_data_key(dir.path(), None, false).expect("new key");
    std::fs::write(dir.path().join(KEK_FILE), [0u8; 32]).expect("damage kek");
    let err = open_data_key(dir.path(), None, true).expect_err("wrong kek");
    assert!(matches!(err, KeyError::Corrupt { .. }), "{err}");
    assert!(err.to_string().contains("kek"), "{err}");
    std::fs::write(dir.path().join(DEK_FILE), b"garbage").expect("damage dek");
    let err = wrapping(dir.path()).expect_err("not a dek");
    assert!(
        err.to_string().contains("not a shoal data key file"),
        "{err}"
    );
}
