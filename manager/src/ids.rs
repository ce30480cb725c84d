//! Object IDs: 25 random lower-case alphanumerics, as Docker Swarm's, so that a prefix of a
//! dozen characters is unique in practice and IDs are safe as containerd container IDs.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

pub fn new_id() -> String {
    let mut rng = rand::thread_rng();
    (0..25)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

/// Milliseconds since the Unix epoch; the proposer stamps times so that applying stays
/// deterministic.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
