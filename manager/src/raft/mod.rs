//! The Raft log (being written).
