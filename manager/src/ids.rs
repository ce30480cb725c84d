//! Object IDs: 25 random lower-case alphanumerics, as Docker Swarm's, so that a prefix of a
//! dozen characters is unique in practice and IDs are safe as containerd container IDs.

use std::collections::HashMap;

use rand::Rng;

/// A map keyed by object ID. Hashed, not ordered: with a hundred thousand tasks a B-tree of
/// `String` keys costs ~20 string comparisons per lookup, each a cache miss on a heap key, and
/// every status report, assignment and role round looks tasks up by ID. foldhash rather than
/// the std's SipHash: the keys are the managers' own random IDs, and it is several times
/// faster on 25-byte keys. Nothing depends on its order: listings sort what they print.
pub type IdMap<V> = HashMap<String, V, foldhash::fast::RandomState>;

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
