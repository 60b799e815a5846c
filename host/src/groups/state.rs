//! One group's delivery state, in memory: members, partition owners, the window of
//! un-acked events and their leases. Pure logic (time is a parameter), so every rule
//! below is unit-tested without a clock, a log or a server.
//!
//! - **The window.** Events are read from the log in offset order into the window,
//!   each tagged with its partition, and leave it when acked or dead-lettered. The
//!   committed position is the highest offset below which everything is resolved:
//!   `first offset in the window - 1`, or how far the log was read when the window is
//!   empty.
//! - **Delivery.** A member gets the ready events of the partitions it owns, oldest
//!   first, up to its in-flight cap. Each delivery takes a lease that expires after the
//!   group's `lease`.
//! - **Rebalance and in-flight events: drain before handover.** When members join or
//!   leave, partitions are reassigned at once, but a partition whose events are still
//!   leased to their previous owner is not delivered to its new owner until those
//!   leases end (acked, nacked or expired). A stream is therefore never processed by
//!   two live members at the same time, and its events keep their order across a
//!   rebalance. A member that leaves or whose session expires gives its leases back at
//!   once: nobody is left to finish them.
//! - **Redelivery and dead letters.** A delivery that ends without an ack (a nack, an
//!   expired lease, the member leaving) makes the event ready again, unless it has been
//!   delivered `max_deliveries` times: it then leaves the window as a [`DeadLetter`]
//!   carrying the last reason (the member's `nack` reason, or what ended the lease).
//! - **Acks.** Any ack of a delivered event resolves it, even from a member whose lease
//!   has since expired (the work was done); a later ack of the same event is reported
//!   as unknown.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::assign::{assign, partition_of};
use crate::log::Event;

/// The limits one group's state enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Partitions the log is split into.
    pub partitions: u32,
    /// How long a delivered event stays leased.
    pub lease: Duration,
    /// How long a silent member stays in the group.
    pub session_timeout: Duration,
    /// Deliveries before dead-lettering.
    pub max_deliveries: u32,
    /// Leases one member holds at most.
    pub max_in_flight: usize,
    /// Un-acked events held at most.
    pub max_window_events: usize,
    /// Data and metadata bytes of the un-acked events held at most.
    pub max_window_bytes: usize,
    /// Members at most.
    pub max_members: usize,
}

/// Why the state refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The member is not in the group (it never joined, left, or its session expired).
    #[error("`{0}` is not a member of the group (its session may have expired); join again")]
    NotMember(String),
    /// The group is full.
    #[error(
        "the group already has {0} members, the most allowed (`consumers.max_members_per_group`)"
    )]
    TooManyMembers(usize),
}

/// Counters of a group since the host started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Deliveries, first ones and redeliveries.
    pub delivered: u64,
    /// Events resolved by an ack.
    pub acked: u64,
    /// Deliveries of an event delivered before.
    pub redeliveries: u64,
    /// Events moved to the dead letters.
    pub dead_lettered: u64,
    /// Leases that expired.
    pub expired_leases: u64,
    /// Membership changes that reassigned the partitions.
    pub rebalances: u64,
}

/// An event handed to a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The event.
    pub event: Event,
    /// Which delivery of it this is, from 1.
    pub delivery: u32,
}

/// An event that left the window unprocessed after `max_deliveries` deliveries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// The event's offset.
    pub offset: u64,
    /// Its stream.
    pub stream: String,
    /// Its type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// How many times it was delivered.
    pub deliveries: u32,
    /// The last reason a delivery failed.
    pub last_error: String,
    /// The member of the last delivery.
    pub member: Option<String>,
}

/// What an ack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AckOutcome {
    /// Events resolved.
    pub acked: usize,
    /// Offsets that are not delivered events of the window: already acked or
    /// dead-lettered, never delivered, or not the group's.
    pub unknown: Vec<u64>,
}

/// What a nack did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct NackOutcome {
    /// Events made ready for redelivery.
    pub nacked: usize,
    /// Events that went to the dead letters instead.
    pub dead_lettered: Vec<u64>,
    /// Offsets this member holds no lease on.
    pub unknown: Vec<u64>,
}

/// A member as shown by `refract groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    /// Its name.
    pub name: String,
    /// The partitions it owns.
    pub partitions: Vec<u32>,
    /// Leases it holds.
    pub in_flight: usize,
    /// Milliseconds since it was last heard from.
    pub idle_ms: u64,
}

/// The state of a group at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StateView {
    /// Everything at or below this offset is acked or dead-lettered.
    pub committed: u64,
    /// How far the log has been read into the window.
    pub read_through: u64,
    /// Un-acked events in the window.
    pub window_events: usize,
    /// Of which leased to a member now.
    pub in_flight: usize,
    /// The members, by name.
    pub members: Vec<MemberView>,
    /// The counters.
    pub stats: Stats,
}

#[derive(Debug, Clone)]
struct Member {
    last_seen: Instant,
    in_flight: usize,
}

#[derive(Debug, Clone)]
struct Lease {
    member: String,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Pending {
    event: Event,
    partition: u32,
    bytes: usize,
    deliveries: u32,
    lease: Option<Lease>,
    last_error: Option<String>,
    last_member: Option<String>,
}

/// One group's members, partitions and window. See the module documentation.
#[derive(Debug, Clone)]
pub struct GroupState {
    limits: Limits,
    members: BTreeMap<String, Member>,
    /// The owner of each partition.
    owners: Vec<Option<String>>,
    pending: BTreeMap<u64, Pending>,
    window_bytes: usize,
    read_through: u64,
    stats: Stats,
}

impl GroupState {
    /// An empty group whose committed position is `committed`.
    pub fn new(limits: Limits, committed: u64) -> GroupState {
        let owners = vec![None; limits.partitions.max(1) as usize];
        GroupState {
            limits,
            members: BTreeMap::new(),
            owners,
            pending: BTreeMap::new(),
            window_bytes: 0,
            read_through: committed,
            stats: Stats::default(),
        }
    }

    /// Everything at or below this offset is acked or dead-lettered.
    pub fn committed(&self) -> u64 {
        self.pending
            .keys()
            .next()
            .map_or(self.read_through, |first| first - 1)
    }

    /// How far the log has been read into the window: the next read starts after it.
    pub fn read_through(&self) -> u64 {
        self.read_through
    }

    /// The counters.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Whether `member` is in the group.
    pub fn is_member(&self, member: &str) -> bool {
        self.members.contains_key(member)
    }

    /// Adds `member` (or refreshes its session); returns whether it is new, in which
    /// case the partitions were reassigned.
    pub fn join(&mut self, member: &str, now: Instant) -> Result<bool, StateError> {
        if let Some(known) = self.members.get_mut(member) {
            known.last_seen = now;
            return Ok(false);
        }
        if self.members.len() >= self.limits.max_members {
            return Err(StateError::TooManyMembers(self.limits.max_members));
        }
        self.members.insert(
            member.to_owned(),
            Member {
                last_seen: now,
                in_flight: 0,
            },
        );
        self.rebalance();
        Ok(true)
    }

    /// Refreshes a member's session.
    pub fn touch(&mut self, member: &str, now: Instant) -> Result<(), StateError> {
        let known = self
            .members
            .get_mut(member)
            .ok_or_else(|| StateError::NotMember(member.to_owned()))?;
        known.last_seen = now;
        Ok(())
    }

    /// Removes `member`: its leases end at once and its partitions move. Returns the
    /// events that thereby reached `max_deliveries`.
    pub fn leave(&mut self, member: &str) -> Vec<DeadLetter> {
        if self.members.remove(member).is_none() {
            return Vec::new();
        }
        let reason = format!("member `{member}` left the group with the event in flight");
        let dead = self.release_where(|lease| lease.member == member, &reason);
        self.rebalance();
        dead
    }

    /// How many more events the window may take now (0 when full).
    pub fn room(&self) -> usize {
        if self.window_bytes >= self.limits.max_window_bytes {
            return 0;
        }
        self.limits
            .max_window_events
            .saturating_sub(self.pending.len())
    }

    /// Adds events read from the log (in offset order, all above `read_through`) and
    /// records that the log was read through `scanned_through`.
    pub fn push(&mut self, events: Vec<Event>, scanned_through: u64) {
        for event in events {
            if event.offset <= self.read_through {
                continue;
            }
            let bytes = event.data.len() + event.metadata.as_ref().map_or(0, String::len);
            self.window_bytes += bytes;
            let partition = partition_of(&event.stream, self.limits.partitions);
            self.pending.insert(
                event.offset,
                Pending {
                    event,
                    partition,
                    bytes,
                    deliveries: 0,
                    lease: None,
                    last_error: None,
                    last_member: None,
                },
            );
        }
        self.read_through = self.read_through.max(scanned_through);
    }

    /// Leases up to `max` ready events of `member`'s partitions to it, oldest first,
    /// within its in-flight cap, for the group's lease.
    pub fn deliver(
        &mut self,
        member: &str,
        max: usize,
        now: Instant,
    ) -> Result<Vec<Delivery>, StateError> {
        let lease = self.limits.lease;
        self.deliver_for(member, max, lease, now)
    }

    /// [`GroupState::deliver`], with a lease of `lease` (the caller bounds it).
    pub fn deliver_for(
        &mut self,
        member: &str,
        max: usize,
        lease: Duration,
        now: Instant,
    ) -> Result<Vec<Delivery>, StateError> {
        self.touch(member, now)?;
        let in_flight = self.members.get(member).map_or(0, |m| m.in_flight);
        let mut budget = max.min(self.limits.max_in_flight.saturating_sub(in_flight));
        if budget == 0 {
            return Ok(Vec::new());
        }
        // Drain before handover: a partition with leases held by anyone but its owner
        // waits until they end.
        let blocked: BTreeSet<u32> = self
            .pending
            .values()
            .filter_map(|p| {
                let lease = p.lease.as_ref()?;
                let owner = self.owners[p.partition as usize].as_deref();
                (owner != Some(lease.member.as_str())).then_some(p.partition)
            })
            .collect();
        let expires = now + lease;
        let mut out = Vec::new();
        for pending in self.pending.values_mut() {
            if budget == 0 {
                break;
            }
            if pending.lease.is_some()
                || self.owners[pending.partition as usize].as_deref() != Some(member)
                || blocked.contains(&pending.partition)
            {
                continue;
            }
            pending.deliveries += 1;
            if pending.deliveries > 1 {
                self.stats.redeliveries += 1;
            }
            pending.lease = Some(Lease {
                member: member.to_owned(),
                expires,
            });
            pending.last_member = Some(member.to_owned());
            out.push(Delivery {
                event: pending.event.clone(),
                delivery: pending.deliveries,
            });
            budget -= 1;
        }
        self.stats.delivered += out.len() as u64;
        if let Some(known) = self.members.get_mut(member) {
            known.in_flight += out.len();
        }
        Ok(out)
    }

    /// Resolves delivered events. Any member's ack counts (see the module docs); the
    /// member's session is refreshed if it is one.
    pub fn ack(&mut self, member: &str, offsets: &[u64], now: Instant) -> AckOutcome {
        if let Some(known) = self.members.get_mut(member) {
            known.last_seen = now;
        }
        let mut outcome = AckOutcome::default();
        for &offset in offsets {
            match self.pending.get(&offset) {
                Some(pending) if pending.deliveries > 0 => {
                    if let Some(removed) = self.pending.remove(&offset) {
                        self.forget(&removed);
                    }
                    self.stats.acked += 1;
                    outcome.acked += 1;
                }
                _ => outcome.unknown.push(offset),
            }
        }
        outcome
    }

    /// Ends `member`'s leases on `offsets` with `reason`: each event is delivered again,
    /// or dead-lettered if it has had `max_deliveries` deliveries.
    pub fn nack(
        &mut self,
        member: &str,
        offsets: &[u64],
        reason: &str,
        now: Instant,
    ) -> (NackOutcome, Vec<DeadLetter>) {
        if let Some(known) = self.members.get_mut(member) {
            known.last_seen = now;
        }
        let mut outcome = NackOutcome::default();
        let mut dead = Vec::new();
        for &offset in offsets {
            let held = self
                .pending
                .get(&offset)
                .and_then(|p| p.lease.as_ref())
                .is_some_and(|lease| lease.member == member);
            if !held {
                outcome.unknown.push(offset);
                continue;
            }
            match self.release(offset, reason) {
                Some(letter) => {
                    outcome.dead_lettered.push(letter.offset);
                    dead.push(letter);
                }
                None => outcome.nacked += 1,
            }
        }
        (outcome, dead)
    }

    /// Ends expired leases and expired sessions (reassigning partitions if a member
    /// left). Returns the dead letters this made, and whether any event became ready or
    /// any partition moved (so waiting members should look again).
    pub fn expire(&mut self, now: Instant) -> (Vec<DeadLetter>, bool) {
        let timeout = self.limits.session_timeout;
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) >= timeout)
            .map(|(name, _)| name.clone())
            .collect();
        let mut dead = Vec::new();
        let mut changed = false;
        for name in &gone {
            self.members.remove(name);
            let reason = format!(
                "member `{name}` was silent for {} ms (its session expired) with the event in flight",
                timeout.as_millis()
            );
            dead.extend(self.release_where(|lease| &lease.member == name, &reason));
            changed = true;
        }
        if !gone.is_empty() {
            self.rebalance();
        }
        let expired: Vec<(u64, String)> = self
            .pending
            .iter()
            .filter_map(|(offset, p)| {
                let lease = p.lease.as_ref()?;
                (lease.expires <= now).then(|| (*offset, lease.member.clone()))
            })
            .collect();
        for (offset, member) in expired {
            self.stats.expired_leases += 1;
            let reason =
                format!("the lease expired before member `{member}` acked or nacked the event");
            dead.extend(self.release(offset, &reason));
            changed = true;
        }
        (dead, changed)
    }

    /// Moves the group to `committed`: the window is emptied (its leases end without
    /// counting as failed deliveries) and reading starts again after `committed`.
    pub fn reset(&mut self, committed: u64) {
        self.pending.clear();
        self.window_bytes = 0;
        for member in self.members.values_mut() {
            member.in_flight = 0;
        }
        self.read_through = committed;
    }

    /// The state now.
    pub fn view(&self, now: Instant) -> StateView {
        let members = self
            .members
            .iter()
            .map(|(name, m)| MemberView {
                name: name.clone(),
                partitions: self
                    .owners
                    .iter()
                    .enumerate()
                    .filter(|(_, owner)| owner.as_deref() == Some(name.as_str()))
                    .map(|(p, _)| u32::try_from(p).unwrap_or(u32::MAX))
                    .collect(),
                in_flight: m.in_flight,
                idle_ms: u64::try_from(now.duration_since(m.last_seen).as_millis())
                    .unwrap_or(u64::MAX),
            })
            .collect();
        StateView {
            committed: self.committed(),
            read_through: self.read_through,
            window_events: self.pending.len(),
            in_flight: self.pending.values().filter(|p| p.lease.is_some()).count(),
            members,
            stats: self.stats,
        }
    }

    fn rebalance(&mut self) {
        let names: Vec<&str> = self.members.keys().map(String::as_str).collect();
        self.owners = assign(&names, self.limits.partitions);
        self.stats.rebalances += 1;
    }

    /// Ends every lease matching `which` (see [`GroupState::release`]).
    fn release_where(&mut self, which: impl Fn(&Lease) -> bool, reason: &str) -> Vec<DeadLetter> {
        let offsets: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.lease.as_ref().is_some_and(&which))
            .map(|(offset, _)| *offset)
            .collect();
        offsets
            .into_iter()
            .filter_map(|offset| self.release(offset, reason))
            .collect()
    }

    /// Ends the lease on `offset` with `reason`. Returns the dead letter if the event has
    /// had its `max_deliveries`; it is then out of the window.
    fn release(&mut self, offset: u64, reason: &str) -> Option<DeadLetter> {
        let pending = self.pending.get_mut(&offset)?;
        if let Some(lease) = pending.lease.take()
            && let Some(holder) = self.members.get_mut(&lease.member)
        {
            holder.in_flight = holder.in_flight.saturating_sub(1);
        }
        pending.last_error = Some(reason.to_owned());
        if pending.deliveries < self.limits.max_deliveries {
            return None;
        }
        let removed = self.pending.remove(&offset)?;
        self.window_bytes -= removed.bytes;
        self.stats.dead_lettered += 1;
        Some(DeadLetter {
            offset,
            stream: removed.event.stream,
            event_type: removed.event.event_type,
            deliveries: removed.deliveries,
            last_error: removed.last_error.unwrap_or_default(),
            member: removed.last_member,
        })
    }

    /// Accounts for an event leaving the window resolved.
    fn forget(&mut self, removed: &Pending) {
        self.window_bytes -= removed.bytes;
        if let Some(lease) = &removed.lease
            && let Some(holder) = self.members.get_mut(&lease.member)
        {
            holder.in_flight = holder.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            partitions: 8,
            lease: Duration::from_secs(10),
            session_timeout: Duration::from_secs(5),
            max_deliveries: 2,
            max_in_flight: 100,
            max_window_events: 1000,
            max_window_bytes: 1 << 20,
            max_members: 10,
        }
    }

    fn event(offset: u64, stream: &str) -> Event {
        Event {
            offset,
            id: format!("id-{offset}"),
            stream: stream.to_owned(),
            stream_version: 1,
            event_type: "t".to_owned(),
            data: "{}".to_owned(),
            metadata: None,
            recorded_at: jiff::Timestamp::UNIX_EPOCH,
        }
    }

    fn log(count: u64, streams: u64) -> Vec<Event> {
        (1..=count)
            .map(|o| event(o, &format!("s-{}", o % streams)))
            .collect()
    }

    fn offsets(deliveries: &[Delivery]) -> Vec<u64> {
        deliveries.iter().map(|d| d.event.offset).collect()
    }

    #[test]
    fn members_split_the_streams_and_acks_move_the_commit() {
        let now = Instant::now();
        let mut state = GroupState::new(limits(), 0);
        state.join("a", now).unwrap();
        state.join("b", now).unwrap();
        state.push(log(40, 10), 45);
        let a = state.deliver("a", 100, now).unwrap();
        let b = state.deliver("b", 100, now).unwrap();
        assert_eq!(a.len() + b.len(), 40);
        let streams = |d: &[Delivery]| -> BTreeSet<String> {
            d.iter().map(|d| d.event.stream.clone()).collect()
        };
        assert!(streams(&a).is_disjoint(&streams(&b)));
        assert_eq!(state.committed(), 0);
        // Acking out of order commits only the contiguous prefix.
        let mut all = offsets(&a);
        all.extend(offsets(&b));
        all.sort_unstable();
        state.ack("a", &all[1..], now);
        assert_eq!(state.committed(), 0);
        let outcome = state.ack("b", &all[..1], now);
        assert_eq!(outcome.acked, 1);
        assert_eq!(
            state.committed(),
            45,
            "nothing left: committed is how far the log was read"
        );
        assert_eq!(state.ack("a", &[3], now).unknown, vec![3]);
    }

    #[test]
    fn a_partition_moves_only_once_its_leases_have_ended() {
        let now = Instant::now();
        let mut state = GroupState::new(limits(), 0);
        state.join("a", now).unwrap();
        state.push(log(20, 20), 20);
        let first = state.deliver("a", 100, now).unwrap();
        assert_eq!(first.len(), 20);
        // b joins: half the partitions are b's now, but a still holds their leases.
        state.join("b", now).unwrap();
        assert!(state.deliver("b", 100, now).unwrap().is_empty());
        // a acks what it holds of b's partitions except one event; b gets nothing of
        // that one partition until it is acked, but its other partitions are free.
        let view = state.view(now);
        let b_partitions: BTreeSet<u32> = view.members[1].partitions.iter().copied().collect();
        let of_b: Vec<&Delivery> = first
            .iter()
            .filter(|d| b_partitions.contains(&partition_of(&d.event.stream, 8)))
            .collect();
        let kept = of_b[0];
        let kept_partition = partition_of(&kept.event.stream, 8);
        let other = of_b
            .iter()
            .find(|d| partition_of(&d.event.stream, 8) != kept_partition)
            .expect("the test needs events in two of b's partitions");
        let acked: Vec<u64> = of_b[1..].iter().map(|d| d.event.offset).collect();
        state.ack("a", &acked, now);
        state.push(
            vec![
                event(21, &kept.event.stream),
                event(22, &other.event.stream),
            ],
            22,
        );
        let to_b = offsets(&state.deliver("b", 100, now).unwrap());
        assert_eq!(
            to_b,
            vec![22],
            "the drained partition moved; the held one waits"
        );
        state.ack("a", &[kept.event.offset], now);
        assert_eq!(offsets(&state.deliver("b", 100, now).unwrap()), vec![21]);
    }

    #[test]
    fn a_departed_member_s_leases_are_redelivered_to_the_others() {
        let now = Instant::now();
        let mut state = GroupState::new(limits(), 0);
        for m in ["a", "b", "c"] {
            state.join(m, now).unwrap();
        }
        state.push(log(60, 30), 60);
        let held_by_c = offsets(&state.deliver("c", 100, now).unwrap());
        assert!(!held_by_c.is_empty());
        // c goes silent; a and b keep their sessions alive.
        let later = now + Duration::from_secs(6);
        state.touch("a", later).unwrap();
        state.touch("b", later).unwrap();
        let (dead, changed) = state.expire(later);
        assert!(dead.is_empty() && changed);
        let mut again = offsets(&state.deliver("a", 100, later).unwrap());
        again.extend(offsets(&state.deliver("b", 100, later).unwrap()));
        for offset in &held_by_c {
            assert!(again.contains(offset), "{offset} was not redelivered");
        }
        assert!(state.stats().redeliveries >= held_by_c.len() as u64);
    }

    #[test]
    fn nacks_and_expired_leases_end_in_the_dead_letters() {
        let now = Instant::now();
        let mut state = GroupState::new(limits(), 0);
        state.join("a", now).unwrap();
        state.push(log(2, 1), 2);
        let first = state.deliver("a", 1, now).unwrap();
        assert_eq!(offsets(&first), vec![1]);
        let (outcome, dead) = state.nack("a", &[1], "smtp refused", now);
        assert_eq!((outcome.nacked, dead.len()), (1, 0));
        let second = state.deliver("a", 1, now).unwrap();
        assert_eq!(second[0].delivery, 2);
        let (outcome, dead) = state.nack("a", &[1], "smtp refused again", now);
        assert_eq!(outcome.dead_lettered, vec![1]);
        assert_eq!(dead[0].last_error, "smtp refused again");
        assert_eq!(dead[0].deliveries, 2);
        assert_eq!(dead[0].member.as_deref(), Some("a"));
        assert_eq!(state.committed(), 1, "a dead letter is resolved");
        // Event 2: its lease expires twice.
        state.deliver("a", 1, now).unwrap();
        let later = now + Duration::from_secs(11);
        state.touch("a", later).unwrap();
        assert!(state.expire(later).0.is_empty());
        state.deliver("a", 1, later).unwrap();
        let much_later = later + Duration::from_secs(11);
        state.touch("a", much_later).unwrap();
        let (dead, _) = state.expire(much_later);
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].last_error.contains("lease"),
            "{}",
            dead[0].last_error
        );
        assert_eq!(state.committed(), 2);
        // Nacking what one does not hold is refused.
        assert_eq!(state.nack("a", &[7], "x", now).0.unknown, vec![7]);
    }

    #[test]
    fn limits_hold() {
        let now = Instant::now();
        let mut state = GroupState::new(
            Limits {
                max_in_flight: 3,
                max_window_events: 5,
                max_members: 1,
                ..limits()
            },
            0,
        );
        state.join("a", now).unwrap();
        assert_eq!(state.join("b", now), Err(StateError::TooManyMembers(1)));
        assert_eq!(state.room(), 5);
        state.push(log(5, 1), 5);
        assert_eq!(state.room(), 0);
        assert_eq!(state.deliver("a", 100, now).unwrap().len(), 3);
        assert!(state.deliver("a", 100, now).unwrap().is_empty());
        assert_eq!(
            state.deliver("z", 1, now),
            Err(StateError::NotMember("z".into()))
        );
        state.reset(2);
        assert_eq!(state.committed(), 2);
        assert_eq!(state.view(now).members[0].in_flight, 0);
    }
}
