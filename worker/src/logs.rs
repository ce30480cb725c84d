//! Reading a task's json-file logs: the files in age order, the last N lines, and following
//! the live file across rotations.
//!
//! A task's directory, `<data>/tasks/<task id>/`, holds its log (`<task id>-json.log`, then
//! `.1`, `.2`… as it rotates, written by [`crate::logdriver`]) and `task.json`, the task's
//! service name and slot written by the executor at start, so log messages can say where they
//! come from after the container is long gone.

use std::collections::VecDeque;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use shoal_proto::LogMessage;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::logdriver::JsonLogEntry;

/// How often a followed log is checked for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error("cannot read the log of task {task}: {path}: {source}")]
    Read {
        task: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `<data>/tasks`, where each task has its directory.
pub fn tasks_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tasks")
}

/// `<data>/tasks/<task id>`.
pub fn task_dir(data_dir: &Path, task_id: &str) -> PathBuf {
    tasks_dir(data_dir).join(task_id)
}

/// `<data>/tasks/<task id>/<task id>-json.log`, the live log file.
pub fn log_path(data_dir: &Path, task_id: &str) -> PathBuf {
    task_dir(data_dir, task_id).join(format!("{task_id}-json.log"))
}

/// What a log message says about its task, kept beside the log in `task.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskMeta {
    pub task_id: String,
    pub service_id: String,
    pub service_name: String,
    pub slot: u64,
    pub node_id: String,
}

impl TaskMeta {
    pub fn path(data_dir: &Path, task_id: &str) -> PathBuf {
        task_dir(data_dir, task_id).join("task.json")
    }

    pub fn write(&self, data_dir: &Path) -> io::Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        fs::write(Self::path(data_dir, &self.task_id), json)
    }

    /// The stored metadata, or just the task ID when there is none (a task that never started).
    pub fn read(data_dir: &Path, task_id: &str) -> Self {
        fs::read(Self::path(data_dir, task_id))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| TaskMeta {
                task_id: task_id.to_string(),
                ..Default::default()
            })
    }
}

/// The task's log files, oldest first (`.N` … `.1`, then the live one); missing ones skipped.
pub fn log_files(data_dir: &Path, task_id: &str) -> Vec<PathBuf> {
    let live = log_path(data_dir, task_id);
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let prefix = format!("{task_id}-json.log.");
    if let Ok(entries) = fs::read_dir(task_dir(data_dir, task_id)) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|n| n.strip_prefix(&prefix))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            rotated.push((n, e.path()));
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut files: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if live.exists() {
        files.push(live);
    }
    files
}

/// Turns one json-file line into a message; `None` for a line that is not an entry (a torn
/// write after a crash), which is skipped rather than ending the stream.
fn parse_line(line: &[u8], meta: &TaskMeta, node_id: &str) -> Option<LogMessage> {
    let entry: JsonLogEntry = serde_json::from_slice(line).ok()?;
    let timestamp_ms = chrono::DateTime::parse_from_rfc3339(&entry.time)
        .map(|t| t.timestamp_millis())
        .unwrap_or(0);
    Some(LogMessage {
        task_id: meta.task_id.clone(),
        slot: meta.slot,
        node_id: if node_id.is_empty() {
            meta.node_id.clone()
        } else {
            node_id.to_string()
        },
        stream: entry.stream,
        timestamp_ms,
        line: entry.log.into_bytes(),
        service_name: meta.service_name.clone(),
    })
}

/// Reads complete lines from `reader`; an unterminated last line stays in `partial` until
/// the rest of it is written.
fn read_lines(
    reader: &mut impl BufRead,
    partial: &mut Vec<u8>,
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    loop {
        let n = reader.read_until(b'\n', partial)?;
        if n == 0 {
            return Ok(());
        }
        if partial.last() == Some(&b'\n') {
            each(partial);
            partial.clear();
        }
    }
}

/// How much of a log to read.
#[derive(Debug, Clone, Copy)]
pub struct LogOptions {
    /// Keep reading new lines as they are written, until the receiver goes away or the task's
    /// directory is removed.
    pub follow: bool,
    /// Only the last `tail` lines of what exists now; negative = all.
    pub tail: i64,
    /// Only lines written at or after this time (ms since the epoch); 0 = all.
    pub since_ms: i64,
}

/// Reads a task's log as it is now, oldest line first: the lines since `since_ms` (0 = all),
/// at most the last `tail` of them (negative = all).
pub fn read_logs(
    data_dir: &Path,
    task_id: &str,
    node_id: &str,
    tail: i64,
    since_ms: i64,
) -> Result<Vec<LogMessage>, LogsError> {
    let meta = TaskMeta::read(data_dir, task_id);
    let mut out = Collector::new(tail, since_ms);
    for path in log_files(data_dir, task_id) {
        let file = match File::open(&path) {
            Ok(f) => f,
            // Rotated away between listing and opening: its lines are in the next file.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(LogsError::Read {
                    task: task_id.to_string(),
                    path,
                    source,
                })
            }
        };
        let mut partial = Vec::new();
        read_lines(&mut BufReader::new(file), &mut partial, |l| {
            out.push(parse_line(l, &meta, node_id))
        })
        .map_err(|source| LogsError::Read {
            task: task_id.to_string(),
            path: path.clone(),
            source,
        })?;
    }
    Ok(out.into_vec())
}

/// Keeps the messages since a time, all of them or only the last `tail` (docker's `--since`,
/// then `--tail`).
struct Collector {
    tail: Option<usize>,
    since_ms: i64,
    msgs: VecDeque<LogMessage>,
}

impl Collector {
    fn new(tail: i64, since_ms: i64) -> Self {
        Collector {
            tail: usize::try_from(tail).ok(),
            since_ms,
            msgs: VecDeque::new(),
        }
    }

    fn push(&mut self, msg: Option<LogMessage>) {
        let Some(msg) = msg else { return };
        if msg.timestamp_ms < self.since_ms {
            return;
        }
        match self.tail {
            Some(0) => {}
            Some(n) => {
                if self.msgs.len() == n {
                    self.msgs.pop_front();
                }
                self.msgs.push_back(msg);
            }
            None => self.msgs.push_back(msg),
        }
    }

    fn into_vec(self) -> Vec<LogMessage> {
        self.msgs.into()
    }
}

/// A task's log as a stream: what exists now (last `tail` lines), then, when following, every
/// new line. The files are read on a thread of their own; it ends when the stream is dropped.
pub fn stream_logs(
    data_dir: PathBuf,
    task_id: String,
    node_id: String,
    opts: LogOptions,
) -> ReceiverStream<Result<LogMessage, LogsError>> {
    let (tx, rx) = mpsc::channel(256);
    std::thread::Builder::new()
        .name(format!("logs-{task_id}"))
        .spawn(move || {
            if let Err(e) = stream_thread(&data_dir, &task_id, &node_id, opts, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| tracing::error!(error = %e, "cannot start a log reader thread"))
        .ok();
    ReceiverStream::new(rx)
}

/// The live log file being followed: its handle (which keeps reading the same file after it
/// is rotated away) and its inode, to notice the rotation.
struct Followed {
    reader: BufReader<File>,
    ino: u64,
    partial: Vec<u8>,
}

impl Followed {
    fn open(path: &Path) -> io::Result<Option<Self>> {
        match File::open(path) {
            Ok(f) => {
                let ino = f.metadata()?.ino();
                Ok(Some(Followed {
                    reader: BufReader::new(f),
                    ino,
                    partial: Vec::new(),
                }))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn stream_thread(
    data_dir: &Path,
    task_id: &str,
    node_id: &str,
    opts: LogOptions,
    tx: &mpsc::Sender<Result<LogMessage, LogsError>>,
) -> Result<(), LogsError> {
    let read_err = |path: &Path, source| LogsError::Read {
        task: task_id.to_string(),
        path: path.to_path_buf(),
        source,
    };
    let live = log_path(data_dir, task_id);

    if !opts.follow {
        for msg in read_logs(data_dir, task_id, node_id, opts.tail, opts.since_ms)? {
            if tx.blocking_send(Ok(msg)).is_err() {
                return Ok(());
            }
        }
        return Ok(());
    }

    // Open the live file before reading the rotated ones, so no line falls between the two.
    let mut followed = Followed::open(&live).map_err(|e| read_err(&live, e))?;
    let mut meta = TaskMeta::read(data_dir, task_id);
    let mut initial = Collector::new(opts.tail, opts.since_ms);
    for path in log_files(data_dir, task_id) {
        if path == live {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let mut partial = Vec::new();
        read_lines(&mut BufReader::new(file), &mut partial, |l| {
            initial.push(parse_line(l, &meta, node_id))
        })
        .map_err(|e| read_err(&path, e))?;
    }
    if let Some(f) = followed.as_mut() {
        read_lines(&mut f.reader, &mut f.partial, |l| {
            initial.push(parse_line(l, &meta, node_id))
        })
        .map_err(|e| read_err(&live, e))?;
    }
    for msg in initial.into_vec() {
        if tx.blocking_send(Ok(msg)).is_err() {
            return Ok(());
        }
    }

    loop {
        std::thread::sleep(FOLLOW_POLL);
        if tx.is_closed() {
            return Ok(());
        }
        let Some(f) = followed.as_mut() else {
            // The task has not logged yet (it may not have started on this node): wait for
            // its file to appear.
            followed = Followed::open(&live).map_err(|e| read_err(&live, e))?;
            if followed.is_some() {
                meta = TaskMeta::read(data_dir, task_id);
            }
            continue;
        };

        let mut batch = Vec::new();
        read_lines(&mut f.reader, &mut f.partial, |l| {
            batch.extend(parse_line(l, &meta, node_id))
        })
        .map_err(|e| read_err(&live, e))?;
        for msg in batch
            .into_iter()
            .filter(|m| m.timestamp_ms >= opts.since_ms)
        {
            if tx.blocking_send(Ok(msg)).is_err() {
                return Ok(());
            }
        }

        match fs::metadata(&live) {
            Ok(m) if m.ino() != f.ino => {
                // Rotated: everything left in the old file was read just above; go on with
                // the new one from its start.
                followed = Followed::open(&live).map_err(|e| read_err(&live, e))?;
            }
            Ok(m) => {
                // Truncated in place (max-file=1): start over at the beginning.
                let pos = f.reader.stream_position().map_err(|e| read_err(&live, e))?;
                if m.len() < pos {
                    f.reader
                        .seek(SeekFrom::Start(0))
                        .map_err(|e| read_err(&live, e))?;
                    f.partial.clear();
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !task_dir(data_dir, task_id).exists() {
                    // The task and its logs were removed: nothing more will come.
                    return Ok(());
                }
                // Between the rename and the new file's creation.
            }
            Err(e) => return Err(read_err(&live, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logdriver::{copy_stream, LogDriverConfig, RotatingWriter};
    use futures::StreamExt;

    fn write_lines(data: &Path, task: &str, cfg: Option<(u64, u32)>, lines: &[String]) {
        let mut c = LogDriverConfig::new(log_path(data, task));
        if let Some((size, files)) = cfg {
            c.max_size = size;
            c.max_files = files;
        }
        let mut w = RotatingWriter::open(c).unwrap();
        copy_stream(lines.concat().as_bytes(), "stdout", &mut w).unwrap();
    }

    fn text(msgs: &[LogMessage]) -> Vec<String> {
        msgs.iter()
            .map(|m| String::from_utf8(m.line.clone()).unwrap())
            .collect()
    }

    #[test]
    fn reads_rotated_files_in_order_and_tails() {
        let dir = tempfile::tempdir().unwrap();
        let lines: Vec<String> = (0..60).map(|i| format!("line {i}\n")).collect();
        write_lines(dir.path(), "t1", Some((300, 5)), &lines);
        assert!(log_files(dir.path(), "t1").len() > 2);
        TaskMeta {
            task_id: "t1".into(),
            service_name: "web".into(),
            slot: 3,
            ..Default::default()
        }
        .write(dir.path())
        .unwrap();

        let all = read_logs(dir.path(), "t1", "node1", -1, 0).unwrap();
        let first: usize = text(&all)[0]
            .trim()
            .strip_prefix("line ")
            .unwrap()
            .parse()
            .unwrap();
        let expected: Vec<String> = (first..60).map(|i| format!("line {i}\n")).collect();
        assert_eq!(text(&all), expected);
        assert_eq!(all[0].service_name, "web");
        assert_eq!(all[0].slot, 3);
        assert_eq!(all[0].node_id, "node1");
        assert_eq!(all[0].stream, "stdout");
        assert!(all[0].timestamp_ms > 0);

        let tail = read_logs(dir.path(), "t1", "n", 2, 0).unwrap();
        assert_eq!(text(&tail), vec!["line 58\n", "line 59\n"]);
        assert!(read_logs(dir.path(), "t1", "n", 0, 0).unwrap().is_empty());
        assert!(read_logs(dir.path(), "nope", "n", -1, 0)
            .unwrap()
            .is_empty());

        // --since keeps the lines from that time on, then --tail the last of those.
        let newest = all.last().unwrap().timestamp_ms;
        assert!(read_logs(dir.path(), "t1", "n", -1, newest + 1)
            .unwrap()
            .is_empty());
        let since = read_logs(dir.path(), "t1", "n", -1, newest).unwrap();
        assert!(!since.is_empty() && since.iter().all(|m| m.timestamp_ms >= newest));
        let both = read_logs(dir.path(), "t1", "n", 1, all[0].timestamp_ms).unwrap();
        assert_eq!(text(&both), vec!["line 59\n"]);
    }

    #[tokio::test]
    async fn follow_survives_rotation_and_ends_on_removal() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        write_lines(
            &data,
            "t2",
            None,
            &["before 1\n".into(), "before 2\n".into()],
        );
        let mut stream = stream_logs(
            data.clone(),
            "t2".into(),
            "n".into(),
            LogOptions {
                follow: true,
                tail: 1,
                since_ms: 0,
            },
        );
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(first.line, b"before 2\n");

        // A writer with a tiny size limit rotates on nearly every line.
        let cfg = LogDriverConfig {
            path: log_path(&data, "t2"),
            max_size: 60,
            max_files: 3,
        };
        let mut writer = RotatingWriter::open(cfg).unwrap();
        let mut got = Vec::new();
        for i in 0..6 {
            copy_stream(format!("after {i}\n").as_bytes(), "stdout", &mut writer).unwrap();
            let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("a followed line arrives")
                .unwrap()
                .unwrap();
            got.push(String::from_utf8(msg.line).unwrap());
        }
        let expected: Vec<String> = (0..6).map(|i| format!("after {i}\n")).collect();
        assert_eq!(got, expected);

        fs::remove_dir_all(task_dir(&data, "t2")).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .expect("the stream ends once the task's logs are removed");
        assert!(end.is_none());
    }

    #[tokio::test]
    async fn follow_waits_for_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().to_path_buf();
        let mut stream = stream_logs(
            data.clone(),
            "t3".into(),
            "n".into(),
            LogOptions {
                follow: true,
                tail: -1,
                since_ms: 0,
            },
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        write_lines(&data, "t3", None, &["hello\n".into()]);
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(msg.line, b"hello\n");
    }
}
