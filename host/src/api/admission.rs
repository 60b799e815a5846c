//! Who gets a connection: the caps on open connections, and which connection is closed
//! to make room when a cap is reached.
//!
//! Every connection starts unauthenticated and becomes authenticated with its first
//! request that carries the token (the auth middleware says so through the
//! [`Connection`] in the request's extensions). Unauthenticated connections share a
//! pool smaller than the total cap, and past a per-peer share; when either is full, the
//! oldest waiting connection of that pool is closed so the newcomer can be served. See
//! [`super::limits`] for why.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use super::limits::{FD_RESERVE, ServerConfig};

/// The caps, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    /// Open connections at most.
    pub max_connections: usize,
    /// Unauthenticated connections at most.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections from one IP address at most.
    pub max_unauthenticated_per_peer: usize,
}

impl AdmissionLimits {
    /// The caps a server configuration asks for.
    pub fn from_config(config: &ServerConfig) -> AdmissionLimits {
        AdmissionLimits {
            max_connections: config.max_connections,
            max_unauthenticated: config.max_unauthenticated_connections,
            max_unauthenticated_per_peer: config.max_unauthenticated_per_peer,
        }
    }
}

/// Every open connection of one server.
#[derive(Debug)]
pub(crate) struct Admission {
    limits: AdmissionLimits,
    open: Mutex<Open>,
    /// Connections closed to make room for newer ones.
    evicted: AtomicU64,
    /// Connections refused because every slot was held by an authenticated one.
    refused: AtomicU64,
}

/// The open connections, by id: ids grow with accept time, so the first entry of a
/// pool is its oldest.
#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    connections: BTreeMap<u64, Entry>,
    unauthenticated: usize,
    unauthenticated_by_peer: HashMap<IpAddr, usize>,
}

#[derive(Debug)]
struct Entry {
    peer: IpAddr,
    authenticated: bool,
    /// Told when the connection is evicted; its task then drops it.
    evict: Arc<Notify>,
}

impl Admission {
    pub(crate) fn new(limits: AdmissionLimits) -> Admission {
        Admission {
            limits,
            open: Mutex::new(Open::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        }
    }

    /// Admits a new connection from `peer`, closing older unauthenticated ones if a cap
    /// is reached; `None` when every slot is held by an authenticated connection.
    pub(crate) fn admit(self: &Arc<Self>, peer: IpAddr) -> Option<Ticket> {
        let mut open = self.lock();
        let limits = self.limits;
        if open
            .unauthenticated_by_peer
            .get(&peer)
            .copied()
            .unwrap_or(0)
            >= limits.max_unauthenticated_per_peer
        {
            self.evict_oldest(&mut open, Some(peer));
        }
        if open.unauthenticated >= limits.max_unauthenticated {
            self.evict_oldest(&mut open, None);
        }
        if open.connections.len() >= limits.max_connections && !self.evict_oldest(&mut open, None) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        let id = open.next_id;
        open.next_id += 1;
        let evict = Arc::new(Notify::new());
        open.connections.insert(
            id,
            Entry {
                peer,
                authenticated: false,
                evict: Arc::clone(&evict),
            },
        );
        open.unauthenticated += 1;
        *open.unauthenticated_by_peer.entry(peer).or_default() += 1;
        Some(Ticket {
            connection: Connection {
                id,
                admission: Arc::clone(self),
            },
            evict,
        })
    }

    /// Closes the oldest unauthenticated connection (of `peer`, if given). Returns
    /// whether there was one.
    fn evict_oldest(&self, open: &mut Open, peer: Option<IpAddr>) -> bool {
        let oldest = open
            .connections
            .iter()
            .find(|(_, entry)| !entry.authenticated && peer.is_none_or(|peer| entry.peer == peer))
            .map(|(id, _)| *id);
        let Some(id) = oldest else {
            return false;
        };
        if let Some(entry) = open.remove(id) {
            entry.evict.notify_one();
            self.evicted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(peer = %entry.peer, "closed the oldest unauthenticated connection to admit a new one");
        }
        true
    }

    /// Open connections now: (all, unauthenticated).
    pub(crate) fn counts(&self) -> (usize, usize) {
        let open = self.lock();
        (open.connections.len(), open.unauthenticated)
    }

    /// Connections closed to make room, and connections refused, since the start.
    pub(crate) fn turned_away(&self) -> (u64, u64) {
        (
            self.evicted.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Open {
    /// Forgets a connection and returns it, releasing its pool slots.
    fn remove(&mut self, id: u64) -> Option<Entry> {
        let entry = self.connections.remove(&id)?;
        if !entry.authenticated {
            self.leave_unauthenticated(entry.peer);
        }
        Some(entry)
    }

    fn leave_unauthenticated(&mut self, peer: IpAddr) {
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        if let Some(count) = self.unauthenticated_by_peer.get_mut(&peer) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.unauthenticated_by_peer.remove(&peer);
            }
        }
    }
}

/// A connection's place, held by its task for as long as it is open.
#[derive(Debug)]
pub(crate) struct Ticket {
    connection: Connection,
    evict: Arc<Notify>,
}

impl Ticket {
    /// Resolves when the connection is closed to make room for a newer one.
    pub(crate) async fn evicted(&self) {
        self.evict.notified().await;
    }

    /// The handle requests on this connection carry.
    pub(crate) fn connection(&self) -> Connection {
        self.connection.clone()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.connection.admission.lock().remove(self.connection.id);
    }
}

/// The connection a request arrived on, in its extensions: the auth middleware marks
/// it authenticated.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    id: u64,
    admission: Arc<Admission>,
}

impl Connection {
    /// The connection showed the token: it leaves the unauthenticated pool for good.
    pub(crate) fn authenticated(&self) {
        let mut open = self.admission.lock();
        let Some(entry) = open.connections.get_mut(&self.id) else {
            return;
        };
        if entry.authenticated {
            return;
        }
        entry.authenticated = true;
        let peer = entry.peer;
        open.leave_unauthenticated(peer);
    }
}

/// Makes sure the process may open `max_connections` sockets besides its own files:
/// raises the soft `ulimit -n` up to the hard limit if needed, or warns naming the fix.
pub(crate) fn ensure_descriptor_budget(max_connections: usize) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let needed = max_connections as u64 + FD_RESERVE;
    let limit = getrlimit(Resource::Nofile);
    let soft = limit.current.unwrap_or(u64::MAX);
    if soft >= needed {
        return;
    }
    let hard = limit.maximum.unwrap_or(u64::MAX);
    if hard >= needed {
        let raised = Rlimit {
            current: Some(needed),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::info!(
                    from = soft,
                    to = needed,
                    "raised the open-files limit for server.max_connections"
                );
                return;
            }
            Err(error) => {
                tracing::warn!("cannot raise the open-files limit: {error}");
            }
        }
    }
    tracing::warn!(
        "server.max_connections = {max_connections} needs about {needed} open files, but `ulimit -n` is {soft} \
         (hard limit {hard}): lower server.max_connections, or raise the limit"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(total: usize, unauthenticated: usize, per_peer: usize) -> Arc<Admission> {
        Arc::new(Admission::new(AdmissionLimits {
            max_connections: total,
            max_unauthenticated: unauthenticated,
            max_unauthenticated_per_peer: per_peer,
        }))
    }

    /// Whether the ticket's connection has been told to close.
    fn was_evicted(ticket: &Ticket) -> bool {
        let notified = ticket.evict.notified();
        tokio::pin!(notified);
        notified.as_mut().enable()
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[test]
    fn a_full_unauthenticated_pool_closes_its_oldest_to_admit_a_newcomer() {
        let admission = admission(10, 3, 3);
        let first = admission.admit(A).unwrap();
        let _second = admission.admit(A).unwrap();
        let _third = admission.admit(A).unwrap();
        let _fourth = admission.admit(A).unwrap();
        assert_eq!(admission.counts(), (3, 3));
        assert_eq!(admission.turned_away(), (1, 0));
        // The first one was told to close, and its slot is already free.
        assert!(was_evicted(&first));
        drop(first);
        assert_eq!(admission.counts(), (3, 3));
    }

    #[test]
    fn one_peer_only_pushes_out_its_own_connections() {
        let admission = admission(10, 4, 2);
        let b = admission.admit(B).unwrap();
        let _a1 = admission.admit(A).unwrap();
        let _a2 = admission.admit(A).unwrap();
        let _a3 = admission.admit(A).unwrap();
        // B's connection, though older, was not the one closed.
        assert!(!was_evicted(&b));
        assert_eq!(admission.counts(), (3, 3));
    }

    #[test]
    fn authenticated_connections_keep_their_slots() {
        let admission = admission(3, 2, 2);
        let held: Vec<Ticket> = (0..2).map(|_| admission.admit(A).unwrap()).collect();
        for ticket in &held {
            ticket.connection().authenticated();
        }
        assert_eq!(admission.counts(), (2, 0));
        let waiting = admission.admit(B).unwrap();
        // The total cap is reached: a newcomer pushes out the waiting one, never the
        // authenticated ones.
        let newcomer = admission.admit(B).unwrap();
        assert!(was_evicted(&waiting));
        assert_eq!(admission.counts(), (3, 1));
        drop(waiting);
        // With every slot authenticated, a newcomer is refused.
        newcomer.connection().authenticated();
        assert!(admission.admit(B).is_none());
        assert_eq!(admission.turned_away(), (1, 1));
    }
}
