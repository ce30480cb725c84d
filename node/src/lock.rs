//! Autolock on this node: a manager whose Raft data key is wrapped with the cluster's unlock key
//! starts locked. Its swarm side (manager and agent) waits until `shoal swarm unlock` gives the
//! key; meanwhile every control call is refused with Docker's words.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tonic::{Request, Status};

pub const LOCKED: &str = "Swarm is encrypted and needs to be unlocked before it can be used. \
     Please use `shoal swarm unlock` to unlock it.";
pub const NOT_LOCKED: &str = "swarm is not locked";

/// Whether the swarm side of this node waits for `swarm unlock`; shared with the API
/// interceptor, which cannot wait on the swarm mutex.
#[derive(Clone, Default)]
pub struct LockFlag(Arc<AtomicBool>);

impl LockFlag {
    pub fn is_locked(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set(&self, locked: bool) {
        self.0.store(locked, Ordering::SeqCst);
    }

    /// The control API's interceptor: refuses every call while locked.
    pub fn refuse_while_locked(&self, req: Request<()>) -> Result<Request<()>, Status> {
        if self.is_locked() {
            return Err(Status::failed_precondition(LOCKED));
        }
        Ok(req)
    }
}
