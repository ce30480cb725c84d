//! The log driver: a small process per container that writes its stdout/stderr to
//! Docker-style `json-file` logs, size-limited and rotated (its body, and why it is a program
//! of its own, are in `driver.rs`).
//!
//! `worker/build.rs` compiles `driver.rs` into the `shoal-log-driver` program and this module
//! carries it inside the `shoal` binary: [`install`] writes it into the daemon's data
//! directory, under a name that is its content's hash, and the executor hands containerd the
//! `binary://` URI ([`LogDriverConfig::binary_uri`]) that makes the shim start it. Shoal still
//! ships as one file. The readers of the logs (`logs.rs`) use [`JsonLogEntry`].

mod driver;

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

pub use driver::{
    copy_stream, encode_entry, format_time, main_status, run, LineSplitter, LogDriverConfig,
    LogDriverError, RotatingWriter, DEFAULT_MAX_FILES, DEFAULT_MAX_SIZE, MAX_LINE, SUBCOMMAND,
};

/// The `shoal-log-driver` program, as `build.rs` compiled it.
const PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/shoal-log-driver"));

/// The installed program's name: this prefix, then the first bytes of its hash.
const PROGRAM_PREFIX: &str = "shoal-log-driver-";

/// Writes the log driver program into `dir` (created if missing) unless it is there already,
/// removes the ones earlier versions left (running drivers keep their open copy), and returns
/// its path. The name is the content's hash, so a path is never rewritten while a shim may be
/// starting it.
pub fn install(dir: &Path) -> io::Result<PathBuf> {
    let digest = hex::encode(Sha256::digest(PROGRAM));
    let name = format!("{PROGRAM_PREFIX}{}", &digest[..16]);
    let path = dir.join(&name);
    fs::create_dir_all(dir)?;
    let in_place = fs::metadata(&path).is_ok_and(|m| m.len() == PROGRAM.len() as u64);
    if !in_place {
        // Written whole under a temporary name and renamed: a crash never leaves half a
        // program under the final name.
        let tmp = dir.join(format!(".{name}.tmp"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(&tmp)?;
        f.write_all(PROGRAM)?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &path)?;
    }
    for entry in fs::read_dir(dir)?.flatten() {
        let other = entry.file_name();
        let other = other.to_string_lossy();
        if other.starts_with(PROGRAM_PREFIX) && other != name.as_str() {
            let _ = fs::remove_file(entry.path());
        }
    }
    Ok(path)
}

impl LogDriverConfig {
    /// The containerd log URI that makes the shim run `exe __log-driver <options>`.
    pub fn binary_uri(&self, exe: &Path) -> String {
        format!(
            "binary://{}?{}={}",
            percent_encode(&exe.to_string_lossy(), true),
            SUBCOMMAND,
            percent_encode(&self.to_arg(), false)
        )
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/` in a path), so Go's
/// `url.Parse` gives back exactly the original path and query value.
fn percent_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One json-file line, fields in Docker's order.
#[derive(serde::Serialize, serde::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct JsonLogEntry {
    pub log: String,
    pub stream: String,
    pub time: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn options_round_trip() {
        let cfg = LogDriverConfig {
            path: PathBuf::from("/var/lib/shoal/tasks/a,b/a,b-json.log"),
            max_size: 1234,
            max_files: 5,
        };
        assert_eq!(LogDriverConfig::parse(&cfg.to_arg()).unwrap(), cfg);
        let only_path = LogDriverConfig::parse("path=/x/y.log").unwrap();
        assert_eq!(only_path.max_size, DEFAULT_MAX_SIZE);
        assert_eq!(only_path.max_files, DEFAULT_MAX_FILES);
        for bad in [
            "",
            "max-size=1",
            "max-size=x,path=/a",
            "max-file=0,path=/a",
            "color=red,path=/a",
            "path=relative",
        ] {
            assert!(LogDriverConfig::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uri_is_go_parseable() {
        let cfg = LogDriverConfig::new(PathBuf::from("/d/tasks/t1/t1-json.log"));
        assert_eq!(
            cfg.binary_uri(Path::new("/usr/bin/sho al")),
            "binary:///usr/bin/sho%20al?__log-driver=max-size%3D10485760%2Cmax-file%3D3%2Cpath%3D%2Fd%2Ftasks%2Ft1%2Ft1-json.log"
        );
    }

    #[test]
    fn time_is_rfc3339_nano() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_450_000);
        assert_eq!(format_time(t), "2023-11-14T22:13:20.12345Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(format_time(t), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn time_matches_chrono_over_centuries() {
        // Days around leap years, century rules and 2038, and a spread of others.
        let mut secs: Vec<u64> = vec![0, 951_782_400, 951_868_800, 4_107_542_400, 2_147_483_648];
        secs.extend((0..2000u64).map(|i| i * 2_147_483 + i * 7919));
        for s in secs {
            for nanos in [0, 1, 500_000_000, 999_999_999] {
                let t = UNIX_EPOCH + Duration::new(s, nanos);
                let dt: chrono::DateTime<chrono::Utc> = t.into();
                let want = dt.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true);
                let got = format_time(t);
                // chrono groups the fraction in threes; Go's RFC3339Nano trims every zero.
                let trimmed = match want.split_once('.') {
                    Some((head, frac)) => {
                        let frac = frac.trim_end_matches('Z').trim_end_matches('0');
                        format!("{head}.{frac}Z")
                    }
                    None => want.clone(),
                };
                assert_eq!(got, trimmed, "{s}.{nanos:09}");
            }
        }
    }

    #[test]
    fn entries_are_escaped_as_serde_json_escapes() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let mut samples: Vec<Vec<u8>> = (0u8..=0x7f).map(|b| vec![b, b'x']).collect();
        samples.push(
            "quote \" back\\slash \u{2028} é 日本 🐟\n"
                .as_bytes()
                .to_vec(),
        );
        samples.push(vec![0xff, 0xfe, b'a', 0xc3]);
        for data in samples {
            let line = encode_entry(&data, "stderr", t);
            let want = serde_json::to_vec(&JsonLogEntry {
                log: String::from_utf8_lossy(&data).into_owned(),
                stream: "stderr".into(),
                time: format_time(t),
            })
            .unwrap();
            assert_eq!(line[..line.len() - 1], want[..], "{data:?}");
            assert_eq!(line.last(), Some(&b'\n'));
        }
    }

    #[test]
    fn install_writes_the_program_once_and_drops_old_versions() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("shoal-log-driver-0123456789abcdef");
        fs::write(&old, b"old").unwrap();
        let path = install(dir.path()).unwrap();
        assert!(!old.exists());
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), PROGRAM.len() as u64);
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(install(dir.path()).unwrap(), path);
        // It is a program that runs, and says what is wrong with bad options.
        let out = std::process::Command::new(&path)
            .args([SUBCOMMAND, "path=relative.log"])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("invalid log driver options"), "{err}");
    }

    fn read_entries(path: &Path) -> Vec<JsonLogEntry> {
        fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn lines_partials_and_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-json.log");
        let mut w = RotatingWriter::open(LogDriverConfig::new(path.clone())).unwrap();
        let long = "a".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nno newline");
        copy_stream(input.as_bytes(), "stdout", &mut w).unwrap();
        let e = read_entries(&path);
        let logs: Vec<&str> = e.iter().map(|e| e.log.as_str()).collect();
        assert_eq!(logs[0], "one\n");
        assert_eq!(logs[1], "two\n");
        assert_eq!(logs[2].len(), MAX_LINE);
        assert_eq!(logs[3], format!("{}\n", "a".repeat(10)));
        assert_eq!(logs[4], "no newline");
        assert!(e.iter().all(|e| e.stream == "stdout"));
        let raw = fs::read_to_string(&path).unwrap();
        assert!(raw.starts_with("{\"log\":\"one\\n\",\"stream\":\"stdout\",\"time\":\""));
    }

    #[test]
    fn rotation_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-json.log");
        let cfg = LogDriverConfig {
            path: path.clone(),
            max_size: 200,
            max_files: 3,
        };
        let mut w = RotatingWriter::open(cfg).unwrap();
        let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
        copy_stream(input.as_bytes(), "stderr", &mut w).unwrap();
        let p1 = dir.path().join("x-json.log.1");
        let p2 = dir.path().join("x-json.log.2");
        assert!(p1.exists() && p2.exists());
        assert!(!dir.path().join("x-json.log.3").exists());
        // Files in age order hold consecutive lines ending with the last one.
        let all: Vec<String> = [p2, p1, path]
            .iter()
            .flat_map(|p| read_entries(p))
            .map(|e| e.log)
            .collect();
        assert_eq!(all.last().unwrap(), "line 99\n");
        let first: usize = all[0]
            .trim()
            .strip_prefix("line ")
            .unwrap()
            .parse()
            .unwrap();
        let expected: Vec<String> = (first..100).map(|i| format!("line {i}\n")).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn single_file_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x-json.log");
        let cfg = LogDriverConfig {
            path: path.clone(),
            max_size: 100,
            max_files: 1,
        };
        let mut w = RotatingWriter::open(cfg).unwrap();
        let input: String = (0..50).map(|i| format!("l{i}\n")).collect();
        copy_stream(input.as_bytes(), "stdout", &mut w).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < 200);
        assert!(!dir.path().join("x-json.log.1").exists());
        assert_eq!(read_entries(&path).last().unwrap().log, "l49\n");
    }
}
