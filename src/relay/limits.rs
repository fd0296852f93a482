//! Per-client-address limits: room creation rate (token bucket), open connections, and
//! connections not yet upgraded to a WebSocket (also limited in all).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Room creations allowed per address in a burst, and how fast the allowance refills.
const CREATE_BURST: f64 = 10.0;
const CREATE_PER_SEC: f64 = 1.0 / 6.0;

#[derive(Default)]
pub struct Limits {
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
    /// WebSocket connections.
    connections: Mutex<Counts>,
    /// Connections still speaking HTTP.
    pending: Mutex<Counts>,
}

/// Open things per address (by [`address_key`]) and in all.
#[derive(Default)]
struct Counts {
    by_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl Counts {
    /// Counts one more for `ip`; false when `ip` has `max` already or all have `max_total`.
    fn try_add(&mut self, ip: IpAddr, max: usize, max_total: usize) -> bool {
        if self.total >= max_total {
            return false;
        }
        let n = self.by_ip.entry(address_key(ip)).or_insert(0);
        if *n >= max {
            return false;
        }
        *n += 1;
        self.total += 1;
        true
    }

    fn remove(&mut self, ip: IpAddr) {
        let ip = address_key(ip);
        if let Some(n) = self.by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            self.total = self.total.saturating_sub(1);
            if *n == 0 {
                self.by_ip.remove(&ip);
            }
        }
    }
}

/// Connections not yet upgraded to a WebSocket, from all addresses together: each holds a file
/// descriptor until its request is done or it times out ([`super::http`]).
pub const MAX_PENDING: usize = 4096;

/// The key an address is counted under: IPv4 as it is (an IPv4-mapped IPv6 address as the
/// IPv4 one), IPv6 by its /64 (one host gets a whole /64 and can pick any address in it).
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Limits {
    /// Takes one room creation from `ip`'s bucket; false when it is empty.
    pub fn allow_create(&self, ip: IpAddr) -> bool {
        let ip = address_key(ip);
        let now = Instant::now();
        let mut buckets = lock(&self.buckets);
        if buckets.len() > 100_000 {
            // Forget full buckets so a scan of many addresses cannot grow this without bound.
            buckets.retain(|_, (tokens, at)| {
                *tokens + at.elapsed().as_secs_f64() * CREATE_PER_SEC < CREATE_BURST
            });
        }
        let (tokens, at) = buckets.entry(ip).or_insert((CREATE_BURST, now));
        *tokens =
            (*tokens + now.duration_since(*at).as_secs_f64() * CREATE_PER_SEC).min(CREATE_BURST);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Counts a new connection from `ip`; false when it already has `max` open.
    pub fn try_open(&self, ip: IpAddr, max: usize) -> bool {
        lock(&self.connections).try_add(ip, max, usize::MAX)
    }

    pub fn close(&self, ip: IpAddr) {
        lock(&self.connections).remove(ip);
    }

    /// Counts a connection from `ip` that is not a WebSocket yet; false when `ip` already has
    /// `max` such, or all addresses together have [`MAX_PENDING`].
    pub fn try_pending(&self, ip: IpAddr, max: usize) -> bool {
        lock(&self.pending).try_add(ip, max, MAX_PENDING)
    }

    fn pending_done(&self, ip: IpAddr) {
        lock(&self.pending).remove(ip);
    }
}

/// A connection counted by [`Limits::try_pending`], until dropped.
pub struct PendingSlot {
    pub relay: std::sync::Arc<super::Relay>,
    pub ip: IpAddr,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        self.relay.limits.pending_done(self.ip);
    }
}

/// One open connection from an address, counted until dropped (also when an upgrade never
/// completes and its callback is dropped unused).
pub struct IpSlot {
    pub relay: std::sync::Arc<super::Relay>,
    pub ip: IpAddr,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        self.relay.limits.close(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creation_is_rate_limited_per_address() {
        let l = Limits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!((0..20).filter(|_| l.allow_create(a)).count(), 10);
        assert!(l.allow_create(b), "another address has its own bucket");
    }

    #[test]
    fn connections_are_counted_and_released() {
        let l = Limits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.try_open(a, 2) && l.try_open(a, 2));
        assert!(!l.try_open(a, 2));
        l.close(a);
        assert!(l.try_open(a, 2));
    }

    #[test]
    fn an_ipv6_host_is_counted_by_its_64_and_mapped_ipv4_as_ipv4() {
        let l = Limits::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8:1:2:ffff::7".parse().unwrap();
        let other_64: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert!(l.try_pending(a, 2) && l.try_pending(same_64, 2));
        assert!(!l.try_pending(a, 2), "one /64, one host");
        assert!(l.try_pending(other_64, 2));
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let mapped_other: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert!(l.try_open(v4, 1));
        assert!(!l.try_open(mapped, 1), "the same IPv4 host");
        assert!(
            l.try_open(mapped_other, 1),
            "not all IPv4 clients in one ::ffff:0/64"
        );
    }

    #[test]
    fn pending_connections_are_limited_per_address_and_in_all() {
        let l = Limits::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(l.try_pending(a, 2) && l.try_pending(a, 2));
        assert!(!l.try_pending(a, 2));
        l.pending_done(a);
        assert!(l.try_pending(a, 2));
        let mut opened = 2;
        for i in 0..u32::MAX {
            if !l.try_pending(IpAddr::from(i.to_be_bytes()), 2) {
                break;
            }
            opened += 1;
        }
        assert_eq!(opened, MAX_PENDING);
        l.pending_done(a);
        assert!(l.try_pending(a, 2), "room again once one is done");
    }
}
