//! LAN discovery with mDNS / DNS-SD (RFC 6762/6763): the host advertises
//! `_openwork._tcp.local.`; clients browse for it with
//! `openwork_proto::discovery`, re-exported here.
//!
//! Discovery is a convenience, never trust: the TXT record's id and
//! fingerprint are hints, pairing checks the certificate the TLS session
//! really presents, and a manual `ADDR:PORT` or the `openwork://` link works
//! when multicast does not. A failure to advertise never stops the host; it
//! shows in `health.get`.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mdns_sd::{DaemonEvent, IfKind, ServiceDaemon, ServiceInfo};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use openwork_proto::discovery::{
    BrowseEvent, Browser, DiscoveredHost, DiscoveryError, SERVICE_TYPE, discover, find, instance_of,
};

use crate::pairing::Pairing;
use crate::protocol::{DiscoveryHealth, PROTOCOL_VERSION};

/// RFC 6763 §4.1.1: an instance name is one DNS label, at most 63 bytes.
const MAX_INSTANCE_BYTES: usize = 63;
/// How long the advertiser waits for the first announcement to go out
/// before it calls advertising failed. Probing takes under a second.
const ANNOUNCE_DEADLINE: Duration = Duration::from_secs(5);
/// How long after the daemon last multicast anything a TXT update waits. A
/// browser that received the old record less than a second before an update
/// keeps both (RFC 6762 §10.2: records under a second old are not flushed),
/// so an update never follows the old record that closely.
const TXT_QUIET: Duration = Duration::from_millis(1250);
/// The longest a TXT update is put off by a busy network.
const TXT_UPDATE_MAX_DELAY: Duration = Duration::from_secs(5);
/// How long shutdown waits for the daemon to confirm the goodbye.
const GOODBYE_WAIT: Duration = Duration::from_secs(1);
/// mdns-sd repeats a goodbye once, 120 ms after the first; let it go out.
const GOODBYE_REPEAT: Duration = Duration::from_millis(150);

/// `[discovery]` in config.toml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiscoveryConfig {
    /// Advertise the host on the LAN (`serve --no-mdns` turns it off too).
    pub enabled: bool,
    /// Interfaces to advertise on, by name. Empty: every interface that is
    /// up and multicast-capable, loopback excepted.
    pub interfaces: Vec<String>,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interfaces: Vec::new(),
        }
    }
}

impl DiscoveryConfig {
    /// Checks the settings; the message names the key.
    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(bad) = self.interfaces.iter().find(|name| {
            name.is_empty() || name.len() > 15 || name.contains(|c: char| c.is_whitespace())
        }) {
            return Err(format!(
                "discovery.interfaces: `{bad}` is not an interface name (1 to 15 characters, no spaces)"
            ));
        }
        Ok(())
    }
}

/// What the host advertises.
#[derive(Debug, Clone)]
pub(crate) struct Advertisement {
    /// The friendly name; becomes the instance name.
    pub name: String,
    pub host_id: String,
    /// Hex SHA-256 of the certificate.
    pub fingerprint: String,
    /// The TLS port.
    pub port: u16,
    /// The listener's addresses; empty when it listens on every address,
    /// in which case those of the advertised interfaces are published.
    pub addresses: Vec<IpAddr>,
    /// Whether IPv4 / IPv6 addresses may be published (a `0.0.0.0`
    /// listener takes no IPv6).
    pub ipv4: bool,
    pub ipv6: bool,
}

/// The advertiser's state, as `health.get` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Off {
        reason: String,
    },
    /// Registered, probing: the first announcement has not gone out yet.
    Starting {
        instance: String,
    },
    Advertising {
        instance: String,
    },
    Failed {
        instance: Option<String>,
        message: String,
        action: String,
    },
}

/// The host's mDNS advertiser.
pub(crate) struct Discovery {
    config: DiscoveryConfig,
    state: Mutex<State>,
}

impl Discovery {
    /// An advertiser that has not started (state `off`).
    pub(crate) fn new(config: DiscoveryConfig) -> Arc<Discovery> {
        Arc::new(Discovery {
            config,
            state: Mutex::new(State::Off {
                reason: "not started".into(),
            }),
        })
    }

    pub(crate) fn config(&self) -> &DiscoveryConfig {
        &self.config
    }

    fn set(&self, state: State) {
        *self.state.lock() = state;
    }

    fn get(&self) -> State {
        self.state.lock().clone()
    }

    /// Records that discovery is off on purpose, and why.
    pub(crate) fn turn_off(&self, reason: &str) {
        tracing::info!("not advertising on the LAN: {reason}");
        self.set(State::Off {
            reason: reason.to_owned(),
        });
    }

    /// Whether advertising failed (the host is then `degraded`).
    pub(crate) fn failed(&self) -> bool {
        matches!(self.get(), State::Failed { .. })
    }

    /// The `discovery` member of `health.get`.
    pub(crate) fn health(&self) -> DiscoveryHealth {
        let service = SERVICE_TYPE.to_owned();
        match self.get() {
            State::Off { reason } => DiscoveryHealth {
                state: "off".into(),
                service,
                instance: None,
                message: Some(reason),
                action: None,
            },
            State::Starting { instance } => DiscoveryHealth {
                state: "starting".into(),
                service,
                instance: Some(instance),
                message: None,
                action: None,
            },
            State::Advertising { instance } => DiscoveryHealth {
                state: "advertising".into(),
                service,
                instance: Some(instance),
                message: None,
                action: None,
            },
            State::Failed {
                instance,
                message,
                action,
            } => DiscoveryHealth {
                state: "failed".into(),
                service,
                instance,
                message: Some(message),
                action: Some(action),
            },
        }
    }

    /// Starts advertising `ad` until `shutdown`, following the pairing
    /// window for the `pair` flag. Never fails: a problem shows in `health`.
    pub(crate) fn start(
        self: &Arc<Self>,
        ad: Advertisement,
        pairing: Arc<Pairing>,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) {
        let instance = instance_name(&ad.name);
        let action_fallback =
            "devices can still pair with the host's ADDR:PORT or the `openwork-host pair` QR code";
        let interfaces = match usable_interfaces(&self.config.interfaces, ad.ipv4, ad.ipv6) {
            Ok(interfaces) => interfaces,
            Err(message) => {
                tracing::warn!("cannot advertise on the LAN: {message}");
                let action = if self.config.interfaces.is_empty() {
                    format!("bring up a network interface with multicast; {action_fallback}")
                } else {
                    format!(
                        "fix [discovery] interfaces in config.toml (or remove it to use every interface), then restart the host; {action_fallback}"
                    )
                };
                // Keep going: the daemon picks up interfaces that appear later.
                self.set(State::Failed {
                    instance: Some(instance.clone()),
                    message,
                    action,
                });
                Vec::new()
            }
        };
        let advertiser = match Advertiser::new(&self.config, &ad, &instance) {
            Ok(advertiser) => advertiser,
            Err(e) => {
                tracing::warn!("cannot advertise on the LAN: {e}");
                self.set(State::Failed {
                    instance: Some(instance),
                    message: e.to_string(),
                    action: format!(
                        "check that this machine allows multicast UDP on port 5353; {action_fallback}"
                    ),
                });
                return;
            }
        };
        if !self.failed() {
            self.set(State::Starting {
                instance: instance.clone(),
            });
        }
        tracing::info!(
            instance = %instance,
            port = ad.port,
            interfaces = %if interfaces.is_empty() { "none yet".to_owned() } else { interfaces.join(", ") },
            "advertising {SERVICE_TYPE} on the LAN"
        );
        let me = Arc::clone(self);
        tracker.spawn(async move { me.run(advertiser, pairing, shutdown).await });
    }

    async fn run(
        &self,
        mut advertiser: Advertiser,
        pairing: Arc<Pairing>,
        shutdown: CancellationToken,
    ) {
        let mut window = pairing.watch_open();
        let mut published = pairing.is_open();
        if let Err(e) = advertiser.register(published) {
            self.fail_registration(&advertiser, &e);
        }
        let mut last_multicast = tokio::time::Instant::now();
        // Since when a flag change waits for a quiet moment (TXT_QUIET).
        let mut pending: Option<tokio::time::Instant> = None;
        let announce_deadline = tokio::time::Instant::now() + ANNOUNCE_DEADLINE;
        let mut deadline_passed = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                changed = window.changed() => {
                    if changed.is_err() {
                        // The pairing service is gone: the host is stopping.
                        shutdown.cancelled().await;
                        break;
                    }
                    pending.get_or_insert_with(tokio::time::Instant::now);
                }
                _ = tokio::time::sleep_until(
                    (last_multicast + TXT_QUIET).min(pending.unwrap_or(last_multicast) + TXT_UPDATE_MAX_DELAY)
                ), if pending.is_some() => {
                    pending = None;
                    let open = pairing.is_open();
                    if open != published {
                        published = open;
                        last_multicast = tokio::time::Instant::now();
                        tracing::debug!(pair_open = open, "updating the TXT record");
                        if let Err(e) = advertiser.register(open) {
                            self.fail_registration(&advertiser, &e);
                        }
                    }
                }
                event = advertiser.monitor.recv_async() => match event {
                    Ok(event) => {
                        if matches!(event, DaemonEvent::Announce(..) | DaemonEvent::Respond(_)) {
                            last_multicast = tokio::time::Instant::now();
                        }
                        self.on_daemon_event(&mut advertiser, event);
                    }
                    Err(_) => {
                        self.set(State::Failed {
                            instance: Some(advertiser.instance.clone()),
                            message: "the mDNS daemon stopped".into(),
                            action: "restart the host".into(),
                        });
                        shutdown.cancelled().await;
                        return;
                    }
                },
                _ = tokio::time::sleep_until(announce_deadline), if !deadline_passed => {
                    deadline_passed = true;
                    if matches!(self.get(), State::Starting { .. }) {
                        tracing::warn!("no mDNS announcement went out within {ANNOUNCE_DEADLINE:?}");
                        self.set(State::Failed {
                            instance: Some(advertiser.instance.clone()),
                            message: format!(
                                "no mDNS announcement could be sent within {} s on any interface",
                                ANNOUNCE_DEADLINE.as_secs()
                            ),
                            action: "check that the network interfaces are up and allow multicast (224.0.0.251, ff02::fb, UDP 5353); devices can still pair with the host's ADDR:PORT or the QR code".into(),
                        });
                    }
                }
            }
        }
        advertiser.goodbye().await;
        self.set(State::Off {
            reason: "the host is shutting down".into(),
        });
    }

    fn fail_registration(&self, advertiser: &Advertiser, e: &DiscoveryError) {
        tracing::warn!("cannot advertise on the LAN: {e}");
        self.set(State::Failed {
            instance: Some(advertiser.instance.clone()),
            message: e.to_string(),
            action: "set another [host] name in config.toml, then restart the host".into(),
        });
    }

    fn on_daemon_event(&self, advertiser: &mut Advertiser, event: DaemonEvent) {
        match event {
            DaemonEvent::Announce(fullname, on) => {
                tracing::debug!(%fullname, %on, "announced");
                if !matches!(self.get(), State::Advertising { .. }) {
                    tracing::info!(instance = %advertiser.instance, "advertising on the LAN");
                }
                self.set(State::Advertising {
                    instance: advertiser.instance.clone(),
                });
            }
            DaemonEvent::NameChange(change) => {
                // Another host on the LAN has this name: RFC 6762 §9 made it unique.
                if let Some(name) = instance_of(&change.new_name) {
                    tracing::warn!(
                        from = %advertiser.instance,
                        to = %name,
                        "another host advertises this name; advertising under a new one"
                    );
                    advertiser.instance = name.clone();
                    if let State::Advertising { .. } | State::Starting { .. } = self.get() {
                        self.set(State::Advertising { instance: name });
                    }
                }
            }
            DaemonEvent::Error(e) => {
                tracing::warn!(error = %e, "mDNS error");
                self.set(State::Failed {
                    instance: Some(advertiser.instance.clone()),
                    message: format!("mDNS: {e}"),
                    action: "check the host's log; devices can still pair with the host's ADDR:PORT or the QR code".into(),
                });
            }
            _ => {}
        }
    }
}

/// The mdns-sd daemon and the record it serves.
struct Advertiser {
    daemon: ServiceDaemon,
    monitor: mdns_sd::Receiver<DaemonEvent>,
    /// The instance name now advertised (it changes after a conflict).
    instance: String,
    /// The name the record was registered under; re-registering it updates it.
    registered_as: String,
    ad: Advertisement,
    target: String,
    fullname: Option<String>,
}

impl Advertiser {
    fn new(
        config: &DiscoveryConfig,
        ad: &Advertisement,
        instance: &str,
    ) -> Result<Advertiser, DiscoveryError> {
        let daemon = ServiceDaemon::new().map_err(|e| DiscoveryError::Daemon(e.to_string()))?;
        let daemon_error = |e: mdns_sd::Error| DiscoveryError::Daemon(e.to_string());
        let monitor = daemon.monitor().map_err(daemon_error)?;
        // The daemon starts on every interface, loopback included; narrow it
        // to what the config allows before anything is sent.
        if config.interfaces.is_empty() {
            daemon
                .disable_interface(vec![IfKind::LoopbackV4, IfKind::LoopbackV6])
                .map_err(daemon_error)?;
        } else {
            daemon
                .disable_interface(IfKind::All)
                .map_err(daemon_error)?;
            daemon
                .enable_interface(
                    config
                        .interfaces
                        .iter()
                        .map(|name| IfKind::Name(name.clone()))
                        .collect::<Vec<_>>(),
                )
                .map_err(daemon_error)?;
        }
        if !ad.ipv6 {
            daemon
                .disable_interface(IfKind::IPv6)
                .map_err(daemon_error)?;
        }
        if !ad.ipv4 {
            daemon
                .disable_interface(IfKind::IPv4)
                .map_err(daemon_error)?;
        }
        Ok(Advertiser {
            daemon,
            monitor,
            instance: instance.to_owned(),
            registered_as: instance.to_owned(),
            ad: ad.clone(),
            target: target_host(&ad.host_id),
            fullname: None,
        })
    }

    /// Registers the record, or updates it (same name) with a new `pair` flag.
    fn register(&mut self, pair_open: bool) -> Result<(), DiscoveryError> {
        let txt = txt_record(&self.ad, pair_open);
        let info = if self.ad.addresses.is_empty() {
            ServiceInfo::new(
                SERVICE_TYPE,
                &self.registered_as,
                &self.target,
                (),
                self.ad.port,
                &txt[..],
            )
            .map(ServiceInfo::enable_addr_auto)
        } else {
            ServiceInfo::new(
                SERVICE_TYPE,
                &self.registered_as,
                &self.target,
                &self.ad.addresses[..],
                self.ad.port,
                &txt[..],
            )
        }
        .map_err(|e| DiscoveryError::Record(e.to_string()))?;
        let mut info = info;
        // The name was probed when first registered (RFC 6762 §8.1); an
        // update of the same records is announced at once (§8.4).
        info.set_requires_probe(self.fullname.is_none());
        self.fullname = Some(info.get_fullname().to_owned());
        self.daemon
            .register(info)
            .map_err(|e| DiscoveryError::Record(e.to_string()))
    }

    /// Unregisters (RFC 6762 §10.1 goodbye: TTL 0) so browsers see the host
    /// leave, then stops the daemon.
    async fn goodbye(self) {
        if let Some(fullname) = &self.fullname {
            match self.daemon.unregister(fullname) {
                Ok(status) => {
                    if tokio::time::timeout(GOODBYE_WAIT, status.recv_async())
                        .await
                        .is_err()
                    {
                        tracing::warn!("the mDNS daemon did not confirm the goodbye");
                    }
                    tokio::time::sleep(GOODBYE_REPEAT).await;
                }
                Err(e) => tracing::warn!(error = %e, "could not send the mDNS goodbye"),
            }
        }
        if let Ok(stopped) = self.daemon.shutdown() {
            let _ = tokio::time::timeout(GOODBYE_WAIT, stopped.recv_async()).await;
        }
    }
}

/// The TXT record (RFC 6763 §6): short lowercase keys, one `key=value`
/// string each, well under the 255-byte limit per string.
fn txt_record(ad: &Advertisement, pair_open: bool) -> Vec<(&'static str, String)> {
    vec![
        ("v", PROTOCOL_VERSION.to_owned()),
        ("id", ad.host_id.clone()),
        ("fp", ad.fingerprint.to_ascii_lowercase()),
        ("pair", if pair_open { "1" } else { "0" }.to_owned()),
    ]
}

/// The instance name for a friendly name: one label of at most 63 bytes of
/// UTF-8 with no control characters (RFC 6763 §4.1.1), cut at a character
/// boundary.
pub(crate) fn instance_name(friendly: &str) -> String {
    let cleaned: String = friendly
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let mut name = String::new();
    for c in cleaned.trim().chars() {
        if name.len() + c.len_utf8() > MAX_INSTANCE_BYTES {
            break;
        }
        name.push(c);
    }
    let name = name.trim_end().to_owned();
    if name.is_empty() {
        "openwork-host".to_owned()
    } else {
        name
    }
}

/// The SRV target: a name of the host's own, derived from its id, so that it
/// never collides with the machine's hostname records or another host's.
pub(crate) fn target_host(host_id: &str) -> String {
    let short: String = host_id.chars().take(12).collect();
    format!("openwork-{short}.local.")
}

/// The names of the interfaces discovery can use: up, multicast-capable,
/// with an address of an allowed family, not loopback (unless allow-listed),
/// and in the allow-list when there is one.
fn usable_interfaces(allow: &[String], ipv4: bool, ipv6: bool) -> Result<Vec<String>, String> {
    use nix::net::if_::InterfaceFlags;
    let addrs = nix::ifaddrs::getifaddrs()
        .map_err(|e| format!("cannot list the network interfaces: {e}"))?;
    let mut present = BTreeMap::<String, bool>::new();
    for a in addrs {
        let family_ok = a.address.as_ref().is_some_and(|s| {
            (ipv4 && s.as_sockaddr_in().is_some()) || (ipv6 && s.as_sockaddr_in6().is_some())
        });
        let usable = family_ok
            && a.flags.contains(InterfaceFlags::IFF_UP)
            && a.flags.contains(InterfaceFlags::IFF_MULTICAST)
            && (!a.flags.contains(InterfaceFlags::IFF_LOOPBACK)
                || allow.contains(&a.interface_name));
        let entry = present.entry(a.interface_name).or_insert(false);
        *entry |= usable;
    }
    let chosen: Vec<String> = present
        .iter()
        .filter(|(name, usable)| **usable && (allow.is_empty() || allow.contains(name)))
        .map(|(name, _)| name.clone())
        .collect();
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    let here = present.keys().cloned().collect::<Vec<_>>().join(", ");
    Err(if allow.is_empty() {
        format!(
            "no network interface is up with multicast and an address to advertise on (interfaces here: {here})"
        )
    } else {
        format!(
            "discovery.interfaces allows {}, but none of them is here, up, multicast-capable and addressed (interfaces here: {here})",
            allow.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ad() -> Advertisement {
        Advertisement {
            name: "desk".into(),
            host_id: "a".repeat(52),
            fingerprint: "AB".repeat(32),
            port: 4747,
            addresses: Vec::new(),
            ipv4: true,
            ipv6: true,
        }
    }

    #[test]
    fn txt_strings_have_lowercase_keys_and_fit_the_rfc_limits() {
        for pair_open in [false, true] {
            let txt = txt_record(&ad(), pair_open);
            let keys: Vec<&str> = txt.iter().map(|(k, _)| *k).collect();
            assert_eq!(keys, ["v", "id", "fp", "pair"]);
            for (key, value) in &txt {
                assert!(key.bytes().all(|b| b.is_ascii_lowercase()), "{key}");
                // One length byte per string: key=value must fit in 255 bytes.
                assert!(key.len() + 1 + value.len() <= 255);
            }
            let total: usize = txt.iter().map(|(k, v)| 1 + k.len() + 1 + v.len()).sum();
            assert!(
                total <= 200,
                "RFC 6763 §6.2 advises under 200 bytes, got {total}"
            );
            let pair = &txt.iter().find(|(k, _)| *k == "pair").unwrap().1;
            assert_eq!(pair, if pair_open { "1" } else { "0" });
        }
        let fp = &txt_record(&ad(), false)[2].1;
        assert_eq!(fp, &"ab".repeat(32));
    }

    #[test]
    fn instance_names_are_one_label_of_at_most_63_bytes_without_controls() {
        assert_eq!(instance_name("  Ada's Desk  "), "Ada's Desk");
        assert_eq!(instance_name("lab.example"), "lab.example");
        assert_eq!(instance_name("a\nb\u{7}c"), "a b c");
        assert_eq!(instance_name(" \t "), "openwork-host");
        let long = "é".repeat(40); // 80 bytes
        let cut = instance_name(&long);
        assert!(cut.len() <= 63 && cut.len() >= 62, "{}", cut.len());
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn the_srv_target_is_a_valid_local_name_of_the_host_id() {
        let target = target_host("abcdefghijklmnopqrstuvwxyz");
        assert_eq!(target, "openwork-abcdefghijkl.local.");
        assert!(target.split('.').all(|l| l.len() <= 63));
    }

    #[test]
    fn interface_allow_lists_naming_nothing_here_are_reported_with_what_is_here() {
        let err = usable_interfaces(&["ow-no-such0".into()], true, true).unwrap_err();
        assert!(
            err.contains("ow-no-such0") && err.contains("interfaces here"),
            "{err}"
        );
        let bad = DiscoveryConfig {
            enabled: true,
            interfaces: vec!["has space".into()],
        };
        assert!(bad.validate().unwrap_err().contains("discovery.interfaces"));
    }
}
