//! A follower's refusal of a leader-only call, with the leader's address as a structured field.
//!
//! Dispatcher sessions and certificate renewals are served by the leader only. A follower
//! answers `UNAVAILABLE` with a message people can read ("this manager is not the swarm leader;
//! the leader is 198.18.0.11:2377") and, for programs, the metadata entry `shoal-leader`: present
//! on every such refusal, holding the leader's address or empty when no leader is known yet.
//! Callers follow the hint from the metadata, never by parsing the message.

use tonic::metadata::MetadataValue;
use tonic::Status;

/// The message every "not the leader" refusal starts with.
pub const NOT_LEADER: &str = "this manager is not the swarm leader";

/// The metadata key that marks a refusal as "not the leader" and names the leader.
pub const LEADER_METADATA_KEY: &str = "shoal-leader";

/// The refusal a follower sends, naming the leader when it knows it.
pub fn not_leader(leader: Option<&str>) -> Status {
    let message = format!(
        "{NOT_LEADER}; the leader is {}",
        leader.unwrap_or("not known yet")
    );
    not_leader_with(leader, &message)
}

/// The refusal with a message of its own (which should start with [`NOT_LEADER`]).
pub fn not_leader_with(leader: Option<&str>, message: &str) -> Status {
    let mut status = Status::unavailable(message);
    // An address that is not valid metadata (it never is: `host:port`) is sent as unknown.
    let value = MetadataValue::try_from(leader.unwrap_or(""))
        .unwrap_or_else(|_| MetadataValue::from_static(""));
    status.metadata_mut().insert(LEADER_METADATA_KEY, value);
    status
}

/// What a status says about the leader: `None` when it is not a "not the leader" refusal,
/// `Some(None)` when it is but the follower knew no leader, `Some(Some(addr))` otherwise.
pub fn leader_hint(status: &Status) -> Option<Option<&str>> {
    let value = status.metadata().get(LEADER_METADATA_KEY)?;
    Some(value.to_str().ok().filter(|addr| !addr.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_travels_in_metadata_and_the_message_stays_readable() {
        let status = not_leader(Some("198.18.0.11:2377"));
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(
            status.message(),
            "this manager is not the swarm leader; the leader is 198.18.0.11:2377"
        );
        assert_eq!(leader_hint(&status), Some(Some("198.18.0.11:2377")));
    }

    #[test]
    fn an_unknown_leader_is_a_refusal_without_an_address() {
        let status = not_leader(None);
        assert!(status.message().ends_with("the leader is not known yet"));
        assert_eq!(leader_hint(&status), Some(None));
    }

    #[test]
    fn other_errors_carry_no_hint_even_if_their_text_looks_alike() {
        let lookalike = Status::unavailable(format!("{NOT_LEADER}; the leader is 10.0.0.1:2377"));
        assert_eq!(leader_hint(&lookalike), None);
        assert_eq!(leader_hint(&Status::not_found("unknown session")), None);
    }
}
