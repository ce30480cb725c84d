//! Join tokens: `SHOAL-1-<cluster part>-<secret>`, Docker Swarm's shape. The cluster part will
//! carry the CA certificate digest once the cluster CA exists (the multi-node issue); the
//! secret is what `--rotate` replaces.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn random(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char)
        .collect()
}

pub fn new_join_token() -> String {
    format!("SHOAL-1-{}-{}", random(50), random(25))
}
