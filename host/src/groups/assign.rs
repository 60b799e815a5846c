//! Partitions and their assignment to members.
//!
//! A stream belongs to partition `h(stream) mod partitions`, where `h` is the first
//! eight bytes of the stream name's SHA-256 (big-endian): stable across builds,
//! platforms and restarts, unlike `std`'s hasher. Partitions go to members round-robin
//! in the order of the members' names: partition `p` to the `(p mod n)`-th member. The
//! assignment is a pure function of the member names, so every rebalance is
//! reproducible and `refract groups` shows why a stream went where it did.

use sha2::{Digest, Sha256};

/// The partition of `stream` in a group of `partitions` partitions (at least 1).
pub fn partition_of(stream: &str, partitions: u32) -> u32 {
    let digest = Sha256::digest(stream.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let hash = u64::from_be_bytes(first);
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

/// The owner of each partition, by index: round-robin over `members`, which must be
/// sorted. `None` for every partition when there are no members.
pub fn assign(members: &[&str], partitions: u32) -> Vec<Option<String>> {
    (0..partitions as usize)
        .map(|p| (!members.is_empty()).then(|| members[p % members.len()].to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_always_lands_in_the_same_partition() {
        let first = partition_of("order-17", 16);
        for _ in 0..3 {
            assert_eq!(partition_of("order-17", 16), first);
        }
        assert!(first < 16);
        assert_eq!(partition_of("anything", 1), 0);
        // Streams spread over the partitions.
        let used: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| partition_of(&format!("s-{i}"), 16))
            .collect();
        assert_eq!(used.len(), 16);
    }

    #[test]
    fn partitions_go_round_robin_by_member_name() {
        let owners = assign(&["a", "b", "c"], 7);
        let names: Vec<&str> = owners.iter().map(|o| o.as_deref().unwrap()).collect();
        assert_eq!(names, ["a", "b", "c", "a", "b", "c", "a"]);
        assert!(assign(&[], 3).iter().all(Option::is_none));
    }
}
