//! The tokio runtime that carries Raft traffic to the other managers, on a thread of its own.
//!
//! The Raft loop has its own thread so that fsyncs do not stall the daemon's runtime; the
//! messages it sends need the same care the other way round: on the daemon's runtime, with a
//! thousand worker sessions and the role rounds (which read the whole store) on two worker
//! threads, a heartbeat or an append waited behind them for longer than the election timeout
//! on a loaded machine, and followers started elections against a healthy leader. The
//! transport's sender tasks (HTTP/2, TLS) run here instead, so they wait only for each other.

use std::sync::mpsc as std_mpsc;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A single-threaded runtime on its own OS thread. Dropping it stops the thread, and with it
/// every task spawned on it.
pub(super) struct NetRuntime {
    handle: Handle,
    /// Dropped with the runtime: the thread's `block_on` returns, and the runtime is dropped
    /// on that thread (a runtime must not be dropped inside another one's task).
    _stop: oneshot::Sender<()>,
}

impl NetRuntime {
    /// Starts the thread, named `name`, and its runtime.
    pub(super) fn start(name: &str) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let (started, ready) = std_mpsc::channel();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let _ = started.send(());
                // Either a stop or the sender's drop ends it.
                let _ = runtime.block_on(stopped);
            })?;
        // The thread owns the runtime from here on; wait until it runs so that tasks spawned
        // right away are polled.
        let _ = ready.recv();
        Ok(NetRuntime {
            handle,
            _stop: stop,
        })
    }

    pub(super) fn handle(&self) -> &Handle {
        &self.handle
    }
}
