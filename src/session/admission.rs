//! The network connection budget: how many connections may be open, and how
//! many of them may still be unauthenticated (in all, and per address).
//!
//! Whoever reaches the port can open connections; only some are paired
//! devices, and which ones cannot be known before `initialize`. So
//! unauthenticated connections have a smaller budget of their own inside the
//! total, and when it is full a newcomer takes the place of the oldest
//! unauthenticated connection of the address holding the most of them,
//! rather than being refused: someone filling the budget can delay a paired
//! device by a moment, not keep it out. A connection leaves the
//! unauthenticated budget when it authenticates (`Admission::authenticated`).
//!
//! Any transport takes its connections through this type; nothing in it
//! knows about TLS.

use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

/// The budget's sizes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AdmissionLimits {
    /// Connections open at once, authenticated or not.
    pub total: usize,
    /// Unauthenticated connections open at once.
    pub unauthenticated: usize,
    /// Unauthenticated connections from one address.
    pub per_address: usize,
}

/// The connection budget of a host's network listeners.
pub(crate) struct Admissions {
    limits: AdmissionLimits,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections counted, authenticated or not.
    total: usize,
    /// Unauthenticated connections, oldest first.
    waiting: BTreeMap<u64, Arc<Slot>>,
    per_address: HashMap<IpAddr, usize>,
    next: u64,
}

/// One connection's place in the budget.
struct Slot {
    address: IpAddr,
    /// Cancelled when a newcomer takes this connection's place.
    evicted: CancellationToken,
    /// Set once the slot no longer counts (closed or evicted).
    released: AtomicBool,
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// Every connection is authenticated and the total is reached.
    Full,
}

/// A connection's place in the budget; dropping it gives the place back.
pub struct Admission {
    admissions: Arc<Admissions>,
    key: u64,
    slot: Arc<Slot>,
    authenticated: AtomicBool,
}

impl Admissions {
    pub(crate) fn new(limits: AdmissionLimits) -> Arc<Admissions> {
        Arc::new(Admissions {
            limits,
            state: Mutex::new(State::default()),
        })
    }

    /// Admits a new, unauthenticated connection from `address`, dropping the
    /// oldest unauthenticated one of the busiest address when a budget is full.
    pub(crate) fn admit(self: &Arc<Self>, address: IpAddr) -> Result<Admission, Refused> {
        let mut state = self.state.lock();
        let from_here = state.per_address.get(&address).copied().unwrap_or(0);
        let victim = if from_here >= self.limits.per_address {
            state.oldest_from(address)
        } else if state.waiting.len() >= self.limits.unauthenticated
            || state.total >= self.limits.total
        {
            match state.busiest() {
                Some(busiest) => state.oldest_from(busiest),
                None => return Err(Refused::Full),
            }
        } else {
            None
        };
        if let Some(key) = victim {
            state.release_waiting(key);
        }
        let key = state.next;
        state.next += 1;
        let slot = Arc::new(Slot {
            address,
            evicted: CancellationToken::new(),
            released: AtomicBool::new(false),
        });
        state.total += 1;
        state.waiting.insert(key, Arc::clone(&slot));
        *state.per_address.entry(address).or_default() += 1;
        Ok(Admission {
            admissions: Arc::clone(self),
            key,
            slot,
            authenticated: AtomicBool::new(false),
        })
    }

    /// (total, unauthenticated) connections counted now.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.total, state.waiting.len())
    }
}

impl State {
    fn oldest_from(&self, address: IpAddr) -> Option<u64> {
        self.waiting
            .iter()
            .find(|(_, slot)| slot.address == address)
            .map(|(key, _)| *key)
    }

    /// The address holding the most unauthenticated connections (the one
    /// whose oldest connection is oldest, among equals).
    fn busiest(&self) -> Option<IpAddr> {
        let most = self.per_address.values().copied().max()?;
        self.waiting
            .values()
            .find(|slot| self.per_address.get(&slot.address) == Some(&most))
            .map(|slot| slot.address)
    }

    /// Takes an unauthenticated connection out of the budget and tells it to go.
    fn release_waiting(&mut self, key: u64) {
        if let Some(slot) = self.waiting.remove(&key) {
            slot.released.store(true, Ordering::Relaxed);
            slot.evicted.cancel();
            self.total -= 1;
            self.forget_address(slot.address);
        }
    }

    fn forget_address(&mut self, address: IpAddr) {
        if let Some(n) = self.per_address.get_mut(&address) {
            *n -= 1;
            if *n == 0 {
                self.per_address.remove(&address);
            }
        }
    }
}

impl Admission {
    /// Cancelled when a newcomer took this connection's place: close it.
    pub(crate) fn evicted(&self) -> CancellationToken {
        self.slot.evicted.clone()
    }

    /// The connection authenticated: it leaves the unauthenticated budget
    /// (and can no longer be evicted). Idempotent.
    pub(crate) fn authenticated(&self) {
        if self.authenticated.swap(true, Ordering::Relaxed) {
            return;
        }
        let mut state = self.admissions.state.lock();
        if self.slot.released.load(Ordering::Relaxed) {
            return;
        }
        if state.waiting.remove(&self.key).is_some() {
            state.forget_address(self.slot.address);
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.admissions.state.lock();
        if self.slot.released.swap(true, Ordering::Relaxed) {
            return;
        }
        state.total -= 1;
        if state.waiting.remove(&self.key).is_some() {
            state.forget_address(self.slot.address);
        }
    }
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("address", &self.slot.address)
            .field("authenticated", &self.authenticated.load(Ordering::Relaxed))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[test]
    fn a_newcomer_takes_the_place_of_the_busiest_address_s_oldest() {
        let budget = Admissions::new(AdmissionLimits {
            total: 10,
            unauthenticated: 4,
            per_address: 3,
        });
        let attacker: Vec<_> = (0..3).map(|_| budget.admit(ip(1)).unwrap()).collect();
        let other = budget.admit(ip(2)).unwrap();
        assert_eq!(budget.counts(), (4, 4));
        // Full: the newcomer evicts the attacker's oldest, not `other`.
        let device = budget.admit(ip(3)).unwrap();
        assert!(attacker[0].evicted().is_cancelled());
        assert!(!attacker[1].evicted().is_cancelled() && !other.evicted().is_cancelled());
        assert_eq!(budget.counts(), (4, 4));
        // Authenticated, it leaves the unauthenticated budget for good.
        device.authenticated();
        assert_eq!(budget.counts(), (4, 3));
        drop(attacker);
        assert_eq!(budget.counts(), (2, 1));
        drop(device);
        drop(other);
        assert_eq!(budget.counts(), (0, 0));
    }

    #[test]
    fn one_address_past_its_share_evicts_its_own_oldest() {
        let budget = Admissions::new(AdmissionLimits {
            total: 10,
            unauthenticated: 10,
            per_address: 2,
        });
        let a = budget.admit(ip(1)).unwrap();
        let b = budget.admit(ip(1)).unwrap();
        let c = budget.admit(ip(1)).unwrap();
        assert!(a.evicted().is_cancelled() && !b.evicted().is_cancelled());
        assert_eq!(budget.counts(), (2, 2));
        drop((a, b, c));
        assert_eq!(budget.counts(), (0, 0));
    }

    #[test]
    fn when_every_connection_is_authenticated_the_total_refuses() {
        let budget = Admissions::new(AdmissionLimits {
            total: 2,
            unauthenticated: 2,
            per_address: 2,
        });
        let a = budget.admit(ip(1)).unwrap();
        let b = budget.admit(ip(2)).unwrap();
        a.authenticated();
        b.authenticated();
        assert_eq!(budget.admit(ip(3)).unwrap_err(), Refused::Full);
        drop(a);
        assert!(budget.admit(ip(3)).is_ok());
    }
}
