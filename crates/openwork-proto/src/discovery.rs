//! LAN discovery with mDNS / DNS-SD (RFC 6762/6763), the client's side:
//! browsing for hosts that advertise `_openwork._tcp.local.` (the host's
//! advertiser is the host's own).
//!
//! Discovery is a convenience, never trust: the TXT record's id and
//! fingerprint are hints, pairing checks the certificate the TLS session
//! really presents, and a manual `ADDR:PORT` or the `openwork://` link works
//! when multicast does not.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use mdns_sd::{ScopedIp, ServiceDaemon, ServiceEvent};
use serde::{Deserialize, Serialize};

/// The DNS-SD service type (RFC 6763 §7).
pub const SERVICE_TYPE: &str = "_openwork._tcp.local.";

/// Why discovery could not run.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("cannot start mDNS: {0}")]
    Daemon(String),
    #[error("{0}")]
    NoInterface(String),
    #[error("the service record is not valid: {0}")]
    Record(String),
}

/// The instance name in a full service name (`Name._openwork._tcp.local.`).
pub fn instance_of(fullname: &str) -> Option<String> {
    let head = fullname.strip_suffix(SERVICE_TYPE)?.strip_suffix('.')?;
    // Names we registered come back escaped (`\.`); names read off the wire do not.
    let mut name = String::with_capacity(head.len());
    let mut chars = head.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                name.push(next);
            }
        } else {
            name.push(c);
        }
    }
    Some(name)
}

/// A host found on the LAN. Everything in it is a hint until pairing or a
/// pinned certificate confirms it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DiscoveredHost {
    /// The instance name: the host's friendly name.
    pub name: String,
    /// IP addresses, best first: IPv4, then routable IPv6, then IPv6
    /// link-local with its zone (`fe80::1%eth0`).
    pub addresses: Vec<String>,
    pub port: u16,
    /// TXT `id`: the host id it claims.
    pub host_id: Option<String>,
    /// TXT `fp`: the certificate fingerprint it claims.
    pub fingerprint: Option<String>,
    /// TXT `v`: its protocol version.
    pub protocol_version: Option<String>,
    /// TXT `pair=1`: a pairing window is open.
    pub pairing_open: bool,
    /// Where to connect, in the order of `addresses` (link-local ones with
    /// their scope id).
    #[serde(skip)]
    pub endpoints: Vec<SocketAddr>,
}

impl DiscoveredHost {
    fn from_resolved(service: &mdns_sd::ResolvedService) -> Option<DiscoveredHost> {
        let name = instance_of(service.get_fullname())?;
        let mut found: Vec<(u8, SocketAddr, String)> = service
            .get_addresses()
            .iter()
            .map(|ip| endpoint(ip, service.get_port()))
            .collect();
        found.sort();
        found.dedup_by(|a, b| a.1 == b.1);
        let txt = |key: &str| {
            service
                .get_property_val_str(key)
                .map(str::to_owned)
                .filter(|v| !v.is_empty())
        };
        Some(DiscoveredHost {
            name,
            addresses: found.iter().map(|(_, _, shown)| shown.clone()).collect(),
            port: service.get_port(),
            host_id: txt("id"),
            fingerprint: txt("fp"),
            protocol_version: txt("v"),
            pairing_open: txt("pair").as_deref() == Some("1"),
            endpoints: found.into_iter().map(|(_, addr, _)| addr).collect(),
        })
    }
}

/// An address's rank (IPv4 first, link-local last), where to connect, and how to show it.
fn endpoint(ip: &ScopedIp, port: u16) -> (u8, SocketAddr, String) {
    match ip {
        ScopedIp::V6(v6) => {
            let addr = *v6.addr();
            if addr.is_unicast_link_local() {
                let scope = v6.scope_id();
                (
                    2,
                    SocketAddr::V6(SocketAddrV6::new(addr, port, 0, scope.index)),
                    format!("{addr}%{}", scope.name),
                )
            } else {
                (1, SocketAddr::new(IpAddr::V6(addr), port), addr.to_string())
            }
        }
        other => {
            let addr = other.to_ip_addr();
            (0, SocketAddr::new(addr, port), addr.to_string())
        }
    }
}

/// What a browser saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseEvent {
    /// A host was resolved, or its record changed.
    Resolved(DiscoveredHost),
    /// A host said goodbye, or its record expired.
    Removed { name: String },
}

/// A running browse for `_openwork._tcp.local.`; stops when dropped.
pub struct Browser {
    daemon: ServiceDaemon,
    events: mdns_sd::Receiver<ServiceEvent>,
    hosts: BTreeMap<String, DiscoveredHost>,
}

impl Browser {
    /// Starts browsing on every interface.
    pub fn start() -> Result<Browser, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        let events = daemon
            .browse(SERVICE_TYPE)
            .map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        Ok(Browser {
            daemon,
            events,
            hosts: BTreeMap::new(),
        })
    }

    /// The next change; `None` once the daemon has stopped.
    pub async fn next(&mut self) -> Option<BrowseEvent> {
        loop {
            match self.events.recv_async().await.ok()? {
                ServiceEvent::ServiceResolved(service) => {
                    let Some(host) = DiscoveredHost::from_resolved(&service) else {
                        continue;
                    };
                    if self.hosts.get(&host.name) == Some(&host) {
                        continue;
                    }
                    self.hosts.insert(host.name.clone(), host.clone());
                    return Some(BrowseEvent::Resolved(host));
                }
                ServiceEvent::ServiceRemoved(_, fullname) => {
                    let Some(name) = instance_of(&fullname) else {
                        continue;
                    };
                    if self.hosts.remove(&name).is_some() {
                        return Some(BrowseEvent::Removed { name });
                    }
                }
                _ => {}
            }
        }
    }

    /// Hosts resolved and not removed so far, by name.
    pub fn hosts(&self) -> Vec<DiscoveredHost> {
        self.hosts.values().cloned().collect()
    }

    /// Browses until `found` picks a host, or `timeout` passes.
    pub async fn find(
        &mut self,
        timeout: Duration,
        mut found: impl FnMut(&DiscoveredHost) -> bool,
    ) -> Option<DiscoveredHost> {
        if let Some(host) = self.hosts.values().find(|h| found(h)) {
            return Some(host.clone());
        }
        tokio::time::timeout(timeout, async {
            while let Some(event) = self.next().await {
                if let BrowseEvent::Resolved(host) = event
                    && found(&host)
                {
                    return Some(host);
                }
            }
            None
        })
        .await
        .ok()
        .flatten()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.daemon.stop_browse(SERVICE_TYPE);
        let _ = self.daemon.shutdown();
    }
}

/// Every host that answers within `timeout`, by name.
pub async fn discover(timeout: Duration) -> Result<Vec<DiscoveredHost>, DiscoveryError> {
    let mut browser = Browser::start()?;
    let _ = tokio::time::timeout(timeout, async { while browser.next().await.is_some() {} }).await;
    Ok(browser.hosts())
}

/// The first host `found` picks within `timeout`.
pub async fn find(
    timeout: Duration,
    found: impl FnMut(&DiscoveredHost) -> bool,
) -> Result<Option<DiscoveredHost>, DiscoveryError> {
    let mut browser = Browser::start()?;
    Ok(browser.find(timeout, found).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_read_back_from_full_names_escaped_or_not() {
        assert_eq!(
            instance_of("Ada's Desk._openwork._tcp.local.").as_deref(),
            Some("Ada's Desk")
        );
        assert_eq!(
            instance_of("lab\\.example._openwork._tcp.local.").as_deref(),
            Some("lab.example")
        );
        assert_eq!(instance_of("x._http._tcp.local."), None);
    }

    #[test]
    fn addresses_rank_ipv4_first_and_keep_the_zone_of_link_local_ones() {
        use std::net::Ipv6Addr;
        let v4 = ScopedIp::from(IpAddr::from([10, 250, 0, 1]));
        let (rank, addr, shown) = endpoint(&v4, 4747);
        assert_eq!((rank, shown.as_str()), (0, "10.250.0.1"));
        assert_eq!(addr.to_string(), "10.250.0.1:4747");
        let global = ScopedIp::from(IpAddr::V6("2001:db8::1".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(endpoint(&global, 1).0, 1);
    }
}
