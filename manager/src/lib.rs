//! The manager: cluster state in a Raft log, and the roles that act on it.
//!
//! **Architecture Invariant:** every change to cluster state is a [`store::Store::propose`]
//! through Raft; no component writes the in-memory state directly. Only the leader runs the
//! writers (orchestrator, scheduler, dispatcher, autoscaler); each reconciles desired against observed
//! state, so a restart or leader change needs no special path.

pub mod allocator;
pub mod authority;
pub mod autoscaler;
pub mod constraint;
pub mod controlapi;
pub mod dispatcher;
pub mod ids;
mod key_keeper;
pub mod leader;
pub mod membership;
pub mod metrics;
pub mod orchestrator;
pub mod raft;
mod reconcile;
pub mod roles;
pub mod scheduler;
pub mod store;
pub mod tokens;
pub mod usage;

pub use roles::{Manager, ManagerConfig, ManagerError};
