//! Generated event ids: UUID v7 (RFC 9562), strictly increasing within a writer, without
//! a system call per id.
//!
//! `Uuid::now_v7` asks the OS for randomness on every call; at hundreds of thousands of
//! appends per second that was a measurable share of the writer's time. This generator
//! asks once, then uses RFC 9562's "monotonic random" layout: 48 bits of Unix milliseconds,
//! a 42-bit counter that starts at a random value each millisecond and counts up within
//! it, and 32 random bits. Ids from one writer therefore sort by offset (the id index grows
//! at its right edge), and ids from different writers or processes collide only with
//! negligible probability (the UNIQUE index would reject one if they did).

use uuid::Uuid;

/// Bits of the per-millisecond counter (RFC 9562's `rand_a` plus the top of `rand_b`).
const COUNTER_BITS: u32 = 42;

/// Produces v7 ids for one writer.
pub(super) struct IdGenerator {
    /// The millisecond of the last id.
    last_ms: u64,
    /// The counter of the last id within `last_ms`.
    counter: u64,
    /// SplitMix64 state.
    rng: u64,
}

impl IdGenerator {
    /// A generator seeded from the OS (one `getrandom`).
    pub(super) fn new() -> IdGenerator {
        let (_, random) = Uuid::now_v7().as_u64_pair();
        IdGenerator {
            last_ms: 0,
            counter: 0,
            rng: random,
        }
    }

    /// The next id, for an event recorded at `now_ms` (Unix milliseconds). Never smaller
    /// than the previous id, even if the clock goes back.
    pub(super) fn next(&mut self, now_ms: u64) -> Uuid {
        let mut ms = now_ms.max(self.last_ms);
        if ms == self.last_ms {
            self.counter += 1;
            if self.counter >> COUNTER_BITS != 0 {
                // 2^41 ids within one millisecond: borrow the next millisecond.
                ms += 1;
            }
        }
        if ms != self.last_ms {
            // Start low in the counter space (top bit clear) so it can count up.
            self.counter = self.next_random() >> (64 - COUNTER_BITS + 1);
            self.last_ms = ms;
        }
        let ms = u128::from(ms & ((1 << 48) - 1));
        let counter = u128::from(self.counter);
        let tail = u128::from(self.next_random() >> 32);
        let rand_a = counter >> 30; // 12 bits
        let rand_b_high = counter & ((1 << 30) - 1); // 30 bits
        Uuid::from_u128(ms << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b_high << 32 | tail)
    }

    /// SplitMix64: fast, and good enough for uniqueness (not for secrets, which ids are not).
    fn next_random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_v7_and_strictly_increasing() {
        let mut ids = IdGenerator::new();
        let now = 1_700_000_000_000;
        let mut last = ids.next(now);
        for ms in [now, now, now + 1, now - 5, now + 1, now + 2] {
            for _ in 0..1000 {
                let id = ids.next(ms);
                assert_eq!(id.get_version_num(), 7);
                assert_eq!(id.get_variant(), uuid::Variant::RFC4122);
                assert!(id > last, "{id} after {last}");
                last = id;
            }
        }
        let (secs, _) = ids
            .next(now + 2)
            .get_timestamp()
            .map(|t| t.to_unix())
            .unwrap_or_default();
        assert_eq!(secs, (now + 2) / 1000);
    }

    #[test]
    fn counter_overflow_borrows_the_next_millisecond() {
        let mut ids = IdGenerator::new();
        let first = ids.next(10);
        ids.counter = (1 << COUNTER_BITS) - 1;
        let next = ids.next(10);
        assert!(next > first);
        assert_eq!(ids.last_ms, 11);
    }
}
