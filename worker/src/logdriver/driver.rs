//! The log driver's body: what runs in the small process containerd's shim starts for every
//! container, writing its stdout/stderr to Docker-style `json-file` logs, size-limited and
//! rotated.
//!
//! It is compiled twice: as a module of the worker crate (its tests, and the options the
//! executor writes) and on its own by `worker/build.rs` into the `shoal-log-driver` program the
//! `shoal` binary carries and installs (see [`super::install`]). One such process runs per
//! container, so it must be small: the `shoal` binary itself would cost each of them about
//! 1.5 MiB of private memory (the loader relocates its megabyte of vtables and constants in
//! every process), this program a tenth of that. Hence std only, no crate at all, one thread
//! waiting on both streams with `poll(2)`, and the five libc calls declared below.
//!
//! containerd's runc v2 shim starts it for a task whose stdout is a `binary://` URI (containerd
//! 1.6 `pkg/process/io.go`, `NewBinaryIO`): the container's stdout arrives on fd 3, its stderr
//! on fd 4, and fd 5 is a pipe the shim blocks on until we close it (our "ready" signal). Only
//! `CONTAINER_ID` and `CONTAINER_NAMESPACE` are in the environment, and each URI query pair
//! `k=v` becomes two arguments `k v` — in Go map order, i.e. random, so the URI carries exactly
//! one pair, `__log-driver=<options>`, giving the fixed argv `BINARY __log-driver <options>`.
//!
//! Being a child of the shim, not of the daemon, it keeps logging across a daemon `kill -9`.
//! When the task is deleted the shim closes its copies of the pipes and sends SIGTERM; we ignore
//! the signal and exit on end-of-file, after the last line is on disk.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::raw::{c_int, c_short, c_ulong};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The argument (and URI query key) that comes before the options.
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

#[derive(Debug)]
pub enum LogDriverError {
    InvalidOptions { arg: String, reason: String },
    MissingFd { fd: RawFd },
    Open { path: PathBuf, source: io::Error },
}

impl fmt::Display for LogDriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogDriverError::InvalidOptions { arg, reason } => write!(
                f,
                "invalid log driver options {arg:?}: {reason}; expected \
                 `max-size=BYTES,max-file=N,path=FILE` (path last)"
            ),
            LogDriverError::MissingFd { fd } => write!(
                f,
                "file descriptor {fd} is not open: the log driver must be started by \
                 containerd's shim through a binary:// log URI, not by hand"
            ),
            LogDriverError::Open { path, source } => write!(
                f,
                "cannot open the container log {}: {source}; check that the data directory is \
                 writable",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogDriverError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogDriverError::Open { source, .. } => Some(source),
            _ => None,
        }
    }
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
}

/// Formats a time as Go's `time.RFC3339Nano` in UTC (fraction without trailing zeros), the
/// format of Docker's `time` field.
pub fn format_time(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    let mut s = format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
    let nanos = since.subsec_nanos();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push('Z');
    s
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, exact for every day a `SystemTime` can name).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Encodes one entry as a json-file line (with its newline): `{"log":…,"stream":…,"time":…}`,
/// escaped exactly as serde_json escapes strings (the readers parse it with serde_json).
pub fn encode_entry(data: &[u8], stream: &str, time: SystemTime) -> Vec<u8> {
    let mut line = Vec::with_capacity(data.len() + 80);
    line.extend_from_slice(b"{\"log\":");
    push_json_string(&mut line, &String::from_utf8_lossy(data));
    line.extend_from_slice(b",\"stream\":");
    push_json_string(&mut line, stream);
    line.extend_from_slice(b",\"time\":");
    push_json_string(&mut line, &format_time(time));
    line.extend_from_slice(b"}\n");
    line
}

fn push_json_string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            // Every other byte, the bytes of multi-byte characters too, stands for itself.
            _ => out.push(b),
        }
    }
    out.push(b'"');
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

/// Splits one stream's bytes into log entries: one per line (newline kept), lines longer than
/// [`MAX_LINE`] cut into partial entries, the unterminated tail flushed at end-of-file.
pub struct LineSplitter {
    stream: &'static str,
    pending: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: &'static str) -> Self {
        LineSplitter {
            stream,
            pending: Vec::new(),
        }
    }

    /// Writes every entry `data` completes.
    pub fn feed(&mut self, data: &[u8], now: SystemTime, writer: &mut RotatingWriter) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(pos) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let end = start + pos + 1;
            for chunk in self.pending[start..end].chunks(MAX_LINE) {
                emit(writer, chunk, self.stream, now);
            }
            start = end;
        }
        self.pending.drain(..start);
        while self.pending.len() >= MAX_LINE {
            emit(writer, &self.pending[..MAX_LINE], self.stream, now);
            self.pending.drain(..MAX_LINE);
        }
        if self.pending.is_empty() {
            // Give back what a long line took: there is one of these per container.
            self.pending = Vec::new();
        }
    }

    /// End of the stream: the unterminated tail, if any, is an entry of its own.
    pub fn finish(&mut self, writer: &mut RotatingWriter) {
        if !self.pending.is_empty() {
            emit(writer, &self.pending, self.stream, SystemTime::now());
            self.pending = Vec::new();
        }
    }
}

fn emit(writer: &mut RotatingWriter, data: &[u8], stream: &str, now: SystemTime) {
    // A full disk must not block the container on a full pipe: the entry is dropped and
    // reading goes on, as Docker's driver does.
    let _ = writer.write_entry(&encode_entry(data, stream, now));
}

/// Copies a whole stream into entries (one stream read to its end, as in tests).
pub fn copy_stream(
    mut input: impl Read,
    stream: &'static str,
    writer: &mut RotatingWriter,
) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    copy_into(&mut input, &mut LineSplitter::new(stream), writer, &mut buf)
}

/// One read's worth: a pipe holds 64 KiB, a quarter of it is plenty per wakeup.
const READ_BUF: usize = 16 * 1024;

/// The libc calls std does not wrap; their numbers are the same on every Linux architecture
/// Shoal builds for (x86_64, aarch64).
mod sys {
    use std::os::raw::{c_int, c_short, c_ulong};

    #[repr(C)]
    pub struct PollFd {
        pub fd: c_int,
        pub events: c_short,
        pub revents: c_short,
    }

    pub const POLLIN: c_short = 0x1;
    pub const F_GETFD: c_int = 1;
    pub const SIG_IGN: usize = 1;
    pub const SIGHUP: c_int = 1;
    pub const SIGINT: c_int = 2;
    pub const SIGPIPE: c_int = 13;
    pub const SIGTERM: c_int = 15;

    extern "C" {
        pub fn poll(fds: *mut PollFd, nfds: c_ulong, timeout: c_int) -> c_int;
        pub fn fcntl(fd: c_int, cmd: c_int, ...) -> c_int;
        pub fn close(fd: c_int) -> c_int;
        pub fn signal(signum: c_int, handler: usize) -> usize;
    }
}

fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    unsafe { sys::fcntl(fd, sys::F_GETFD) >= 0 }
}

/// Entry point of `BINARY __log-driver <options>`: `args` are the arguments after the
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
    for sig in [sys::SIGTERM, sys::SIGINT, sys::SIGHUP, sys::SIGPIPE] {
        // SAFETY: SIG_IGN installs no handler code.
        unsafe {
            sys::signal(sig, sys::SIG_IGN);
        }
    }
    let mut writer = RotatingWriter::open(cfg)?;
    // SAFETY: fds 3 and 4 were checked open above and are handed to us by the shim for our
    // exclusive use; each is owned by exactly one File from here on.
    let stdout = unsafe { File::from_raw_fd(STDOUT_FD) };
    let stderr = unsafe { File::from_raw_fd(STDERR_FD) };
    if fd_is_open(READY_FD) {
        // Closing the readiness pipe lets the shim go on to start the container.
        // SAFETY: fd 5 is the shim's readiness pipe, ours to close, used by nothing else.
        unsafe {
            sys::close(READY_FD);
        }
    }
    pump(
        [
            (stdout, LineSplitter::new("stdout")),
            (stderr, LineSplitter::new("stderr")),
        ],
        &mut writer,
    );
    Ok(())
}

/// Reads both streams as they become readable until each has ended; a read error ends that
/// stream only, since nothing else can be done with it.
fn pump(streams: [(File, LineSplitter); 2], writer: &mut RotatingWriter) {
    let mut open: Vec<(File, LineSplitter)> = streams.into();
    let mut buf = vec![0u8; READ_BUF];
    while !open.is_empty() {
        let mut fds: Vec<sys::PollFd> = open
            .iter()
            .map(|(f, _)| sys::PollFd {
                fd: f.as_raw_fd() as c_int,
                events: sys::POLLIN,
                revents: 0 as c_short,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfd structs.
        let ready = unsafe { sys::poll(fds.as_mut_ptr(), fds.len() as c_ulong, -1) };
        if ready < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // Without poll there is nothing to wait with: read each stream to its end in turn.
            for (mut file, mut lines) in open {
                let _ = copy_into(&mut file, &mut lines, writer, &mut buf);
            }
            return;
        }
        let mut still_open = Vec::with_capacity(open.len());
        for ((mut file, mut lines), pfd) in open.into_iter().zip(&fds) {
            // Readable, hung up, in error or closed: a read says which.
            if pfd.revents == 0 {
                still_open.push((file, lines));
                continue;
            }
            match read_retrying(&mut file, &mut buf) {
                Ok(0) | Err(_) => lines.finish(writer),
                Ok(n) => {
                    lines.feed(&buf[..n], SystemTime::now(), writer);
                    still_open.push((file, lines));
                }
            }
        }
        open = still_open;
    }
}

/// Reads `input` to its end into entries.
fn copy_into(
    input: &mut impl Read,
    lines: &mut LineSplitter,
    writer: &mut RotatingWriter,
    buf: &mut [u8],
) -> io::Result<()> {
    let result = loop {
        match read_retrying(input, buf) {
            Ok(0) => break Ok(()),
            Ok(n) => lines.feed(&buf[..n], SystemTime::now(), writer),
            Err(e) => break Err(e),
        }
    };
    lines.finish(writer);
    result
}

fn read_retrying(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match input.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// The program's `main`: `BINARY __log-driver OPTIONS`; returns the exit status.
pub fn main_status() -> i32 {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = match args.split_first() {
        Some((first, rest)) if first == SUBCOMMAND => rest,
        _ => &args[..],
    };
    match run(rest) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("shoal log driver: {e}");
            1
        }
    }
}
