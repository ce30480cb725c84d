//! The worker: runs the tasks a manager assigns to this node on containerd.
//!
//! **Architecture Invariant:** the worker knows nothing about Raft or the store; it sees
//! managers only through the Dispatcher protocol, and containerd only through its gRPC API.

pub mod agent;
pub mod agent_service;
pub mod containerd;
pub mod dns;
pub mod executor;
pub mod health;
pub mod image;
pub mod logdriver;
pub mod logs;
pub mod network;
pub mod spec;
pub mod stats;
pub mod volumes;
