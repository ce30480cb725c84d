//! The log driver: a process per container that writes its stdout/stderr to Docker-style
//! `json-file` logs, size-limited and rotated.
//!
//! containerd's runc v2 shim starts it for a task whose stdout is a `binary://` URI (containerd
//! 1.6 `pkg/process/io.go`, `NewBinaryIO`): the container's stdout arrives on fd 3, its stderr on
//! fd 4, and fd 5 is a pipe the shim blocks on until we close it (our "ready" signal). Only
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE` are in the environment, and each URI query pair
//! `k=v` becomes two arguments `k v` — in Go map order, i.e. random, so the URI carries exactly
//! one pair, `__log-driver=<options>`, giving the fixed argv `BINARY __log-driver <options>`.
//!
//! Being a child of the shim, not of the daemon, it keeps logging across a daemon `kill -9`.
//! When the task is deleted the shim closes its copies of the pipes and sends SIGTERM; we ignore
//! the signal and exit on end-of-file, after the last line is on disk. It is synchronous on
//! purpose: one small process per container, two threads, no runtime.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The argument (and URI query key) that selects the log driver in the `shoal` binary.
pub const SUBCOMMAND: &str = "__log-driver";

/// Docker's json-file defaults: 10 MiB per file, 3 files.
pub const DEFAULT_MAX_SIZE: u64 = 10 * 1024 * 1024;
pub const DEFAULT_MAX_FILES: u32 = 3;

/// Longest log entry; a longer line is split into several entries, the first ones without a
/// trailing newline (Docker's 16 KiB partial messages).
pub const MAX_LINE: usize = 16 * 1024;

const STDOUT_FD: RawFd = 3;
const STDERR_FD: RawFd = 4;
const READY_FD: RawFd = 5;

#[derive(Debug, thiserror::Error)]
pub enum LogDriverError {
    #[error(
        "invalid log driver options {arg:?}: {reason}; expected \
         `max-size=BYTES,max-file=N,path=FILE` (path last)"
    )]
    InvalidOptions { arg: String, reason: String },
    #[error(
        "file descriptor {fd} is not open: the log driver must be started by containerd's shim \
         through a binary:// log URI, not by hand"
    )]
    MissingFd { fd: RawFd },
    #[error(
        "cannot open the container log {path}: {source}; check that the data directory is writable"
    )]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where and how much to log; travels as one argv string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDriverConfig {
    pub path: PathBuf,
    /// Rotate once the file reaches this size; 0 = never.
    pub max_size: u64,
    /// Files kept including the current one; 1 = truncate instead of rotating.
    pub max_files: u32,
}

impl LogDriverConfig {
    pub fn new(path: PathBuf) -> Self {
        LogDriverConfig {
            path,
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }

    /// `max-size=N,max-file=N,path=FILE`. The path comes last and takes the rest of the
    /// string, so it may contain commas.
    pub fn to_arg(&self) -> String {
        format!(
            "max-size={},max-file={},path={}",
            self.max_size,
            self.max_files,
            self.path.display()
        )
    }

    pub fn parse(arg: &str) -> Result<Self, LogDriverError> {
        let invalid = |reason: &str| LogDriverError::InvalidOptions {
            arg: arg.to_string(),
            reason: reason.to_string(),
        };
        let mut cfg = LogDriverConfig::new(PathBuf::new());
        let mut rest = arg;
        loop {
            if let Some(path) = rest.strip_prefix("path=") {
                if path.is_empty() {
                    return Err(invalid("empty path"));
                }
                cfg.path = PathBuf::from(path);
                break;
            }
            let (item, tail) = rest.split_once(',').ok_or_else(|| invalid("no path"))?;
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| invalid("an option is not KEY=VALUE"))?;
            match key {
                "max-size" => {
                    cfg.max_size = value
                        .parse()
                        .map_err(|_| invalid("max-size is not a number of bytes"))?
                }
                "max-file" => {
                    cfg.max_files = value
                        .parse()
                        .map_err(|_| invalid("max-file is not a number"))?;
                    if cfg.max_files == 0 {
                        return Err(invalid("max-file must be at least 1"));
                    }
                }
                _ => return Err(invalid(&format!("unknown option {key:?}"))),
            }
            rest = tail;
        }
        if !cfg.path.is_absolute() {
            return Err(invalid("the path must be absolute"));
        }
        Ok(cfg)
    }

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

/// Formats a time as Go's `time.RFC3339Nano` in UTC (fraction without trailing zeros), the
/// format of Docker's `time` field.
pub fn format_time(t: SystemTime) -> String {
    let dt: chrono::DateTime<chrono::Utc> = t.into();
    let mut s = dt.format("%Y-%m-%dT%H:%M:%S").to_string();
    let nanos = dt.timestamp_subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// Encodes one entry as a json-file line (with its newline).
pub fn encode_entry(data: &[u8], stream: &str, time: SystemTime) -> Vec<u8> {
    let entry = JsonLogEntry {
        log: String::from_utf8_lossy(data).into_owned(),
        stream: stream.to_string(),
        time: format_time(time),
    };
    // Serialising a struct of strings cannot fail.
    let mut line = serde_json::to_vec(&entry).unwrap_or_default();
    line.push(b'\n');
    line
}

/// The log file and its rotated siblings (`.1` is the newest rotated one).
pub struct RotatingWriter {
    cfg: LogDriverConfig,
    file: File,
    size: u64,
}

impl RotatingWriter {
    pub fn open(cfg: LogDriverConfig) -> Result<Self, LogDriverError> {
        let open_err = |source| LogDriverError::Open {
            path: cfg.path.clone(),
            source,
        };
        if let Some(dir) = cfg.path.parent() {
            fs::create_dir_all(dir).map_err(open_err)?;
        }
        let file = open_append(&cfg.path).map_err(open_err)?;
        let size = file.metadata().map_err(open_err)?.len();
        Ok(RotatingWriter { cfg, file, size })
    }

    /// Appends one encoded entry, rotating first when the file is full (Docker checks before
    /// writing, so a file may end slightly past the limit).
    pub fn write_entry(&mut self, line: &[u8]) -> io::Result<()> {
        if self.cfg.max_size > 0 && self.size >= self.cfg.max_size {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.cfg.max_files <= 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        let rotated = |n: u32| {
            let mut p = self.cfg.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..self.cfg.max_files - 1).rev() {
            match fs::rename(rotated(n), rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(&self.cfg.path, rotated(1))?;
        self.file = open_append(&self.cfg.path)?;
        self.size = 0;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Splits a byte stream into log entries: one per line (newline kept), lines longer than
/// [`MAX_LINE`] cut into partial entries, the unterminated tail flushed at end-of-file.
pub fn copy_stream(
    mut input: impl Read,
    stream: &str,
    writer: &Mutex<RotatingWriter>,
) -> io::Result<()> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut pending: Vec<u8> = Vec::with_capacity(MAX_LINE);
    let emit = |data: &[u8], now: SystemTime| {
        let line = encode_entry(data, stream, now);
        // A full disk must not block the container on a full pipe: the entry is dropped and
        // reading goes on, as Docker's driver does.
        if let Ok(mut w) = writer.lock() {
            let _ = w.write_entry(&line);
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let now = SystemTime::now();
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            for chunk in pending[start..end].chunks(MAX_LINE) {
                emit(chunk, now);
            }
            start = end;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            emit(&pending[..MAX_LINE], now);
            pending.drain(..MAX_LINE);
        }
    }
    if !pending.is_empty() {
        emit(&pending, SystemTime::now());
    }
    Ok(())
}

fn fd_is_open(fd: RawFd) -> bool {
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok()
}

/// Entry point of `shoal __log-driver <options>`: `args` are the arguments after the
/// subcommand (one: the options string). Returns when both streams are closed.
pub fn run(args: &[String]) -> Result<(), LogDriverError> {
    let arg = match args {
        [arg] => arg.as_str(),
        _ => {
            return Err(LogDriverError::InvalidOptions {
                arg: args.join(" "),
                reason: "expected exactly one argument".into(),
            })
        }
    };
    let cfg = LogDriverConfig::parse(arg)?;
    for fd in [STDOUT_FD, STDERR_FD] {
        if !fd_is_open(fd) {
            return Err(LogDriverError::MissingFd { fd });
        }
    }
    // The shim signals SIGTERM when the task is deleted, after closing its ends of the pipes:
    // end-of-file is the exit condition, so every line already written is kept.
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
        nix::sys::signal::Signal::SIGPIPE,
    ] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(sig, nix::sys::signal::SigHandler::SigIgn);
        }
    }

    let writer = Mutex::new(RotatingWriter::open(cfg)?);
    // SAFETY: fds 3 and 4 were checked open above and are handed to us by the shim for our
    // exclusive use; each is owned by exactly one File from here on.
    let stdout = unsafe { File::from_raw_fd(STDOUT_FD) };
    let stderr = unsafe { File::from_raw_fd(STDERR_FD) };
    if fd_is_open(READY_FD) {
        // Closing the readiness pipe lets the shim go on to start the container.
        let _ = nix::unistd::close(READY_FD);
    }

    std::thread::scope(|s| {
        s.spawn(|| copy_stream(stderr, "stderr", &writer));
        // A read error ends that stream only; nothing else can be done with it.
        let _ = copy_stream(stdout, "stdout", &writer);
    });
    Ok(())
}

/// Runs the log driver and exits when this process was started as one (`BIN __log-driver …`);
/// returns otherwise. For binaries other than `shoal` that stand in for it (the worker's
/// tests), called before `main`, so it reads the arguments from /proc.
pub fn run_if_invoked() {
    let Ok(raw) = std::fs::read("/proc/self/cmdline") else {
        return;
    };
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if args.get(1).map(String::as_str) != Some(SUBCOMMAND) {
        return;
    }
    let code = match run(&args[2..]) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("log driver: {e}");
            1
        }
    };
    std::process::exit(code);
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
        let w = Mutex::new(RotatingWriter::open(LogDriverConfig::new(path.clone())).unwrap());
        let long = "a".repeat(MAX_LINE + 10);
        let input = format!("one\ntwo\n{long}\nno newline");
        copy_stream(input.as_bytes(), "stdout", &w).unwrap();
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
        let w = Mutex::new(RotatingWriter::open(cfg).unwrap());
        let input: String = (0..100).map(|i| format!("line {i}\n")).collect();
        copy_stream(input.as_bytes(), "stderr", &w).unwrap();
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
        let w = Mutex::new(RotatingWriter::open(cfg).unwrap());
        let input: String = (0..50).map(|i| format!("l{i}\n")).collect();
        copy_stream(input.as_bytes(), "stdout", &w).unwrap();
        assert!(fs::metadata(&path).unwrap().len() < 200);
        assert!(!dir.path().join("x-json.log.1").exists());
        assert_eq!(read_entries(&path).last().unwrap().log, "l49\n");
    }
}
