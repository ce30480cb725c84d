//! What a host keeps on its disk, for the tests that check a secret (a join token, the CA or
//! unlock key, a swarm secret) is never written there in plaintext.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The files under `dir` (recursively) whose bytes contain `needle`, without crossing into
/// other filesystems: what is mounted there (a task's in-memory files, a container's root
/// filesystem, a namespace) is not the disk `dir` is on.
pub fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    fn walk(dir: &Path, dev: u64, needle: &[u8], found: &mut Vec<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            if meta.is_dir() {
                walk(&path, dev, needle, found);
            } else if meta.is_file() {
                let holds = fs::read(&path)
                    .is_ok_and(|data| data.windows(needle.len()).any(|w| w == needle));
                if holds {
                    found.push(path.display().to_string());
                }
            }
        }
    }
    let mut found = Vec::new();
    if let Ok(meta) = fs::metadata(dir) {
        walk(dir, meta.dev(), needle, &mut found);
    }
    found
}
