//! Bridges raft-rs's `slog` logging into `tracing`, one level quieter: raft-rs logs routine
//! events (elections, new terms) at info, which are debug detail for a Shoal operator.

use std::fmt::{self, Write as _};

use slog::{Drain, Level, OwnedKVList, Record, Serializer, KV};

/// A logger for raft-rs whose records become `tracing` events under the `shoal::raft` target.
pub(crate) fn raft_logger(raft_id: u64) -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!("raft_id" => raft_id))
}

struct TracingDrain;

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let mut fields = Fields(String::new());
        // Formatting into a String cannot fail in a way worth reporting from a logger.
        let _ = record.kv().serialize(record, &mut fields);
        let _ = values.serialize(record, &mut fields);
        let msg = record.msg();
        let fields = fields.0;
        match record.level() {
            Level::Critical | Level::Error => {
                tracing::error!(target: "shoal::raft", "{msg}{fields}")
            }
            Level::Warning => tracing::warn!(target: "shoal::raft", "{msg}{fields}"),
            Level::Info => tracing::debug!(target: "shoal::raft", "{msg}{fields}"),
            Level::Debug | Level::Trace => tracing::trace!(target: "shoal::raft", "{msg}{fields}"),
        }
        Ok(())
    }
}

struct Fields(String);

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: slog::Key, val: &fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}
