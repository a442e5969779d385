//! Pairing: the window the host's owner opens, the SPAKE2 exchange a device
//! runs over TLS, and the owner's explicit approval that issues a credential.
//!
//! A window is single use: the first device that proves it knows the code
//! waits for the owner, and no other device may start meanwhile; approving,
//! denying or letting it expire closes the window. A device that leaves while
//! it waits withdraws its request at once (the window stays open, so it can
//! try again with the same code), and a device counts as paired only once its
//! credential was handed to a connection that is still there. Wrong codes
//! count: each one pauses the window, and the fifth closes it.

pub(crate) mod console;
pub use openwork_proto::pairing::crypto;

use parking_lot::Mutex;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{broadcast, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::auth::Scope;
use crate::clock;
use crate::devices::{Device, Devices};
use crate::ids;
use crate::protocol::{
    DeviceInfo, PairingBeginParams, PairingBeginResult, PairingClosed, PairingConfirmParams,
    PairingFailed, PairingOpenParams, PairingRequest, PairingResult, PairingStatus, PairingWindow,
    PairingWithdrawn, ScopeInfo,
};
use crate::rpc::notifications::{self, Notification};
use crate::store::StoreError;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Pairing settings (`[pairing]` in config.toml).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PairingConfig {
    /// How long a code is valid when `pair` gives no `--ttl`.
    pub default_ttl_s: u64,
    /// Wrong codes before the window closes.
    pub max_failures: u32,
    /// How long the window refuses new attempts after a wrong code.
    pub failure_pause_ms: u64,
    /// How long a device may take between `pairing.begin` and `pairing.confirm`.
    pub exchange_timeout_s: u64,
    /// How long a device waits for the owner's approval.
    pub approval_timeout_s: u64,
    /// What a window offers when `pair` gives no `--scopes`.
    pub default_scopes: Vec<Scope>,
}

impl Default for PairingConfig {
    fn default() -> Self {
        Self {
            default_ttl_s: 300,
            max_failures: 5,
            failure_pause_ms: 2_000,
            exchange_timeout_s: 60,
            approval_timeout_s: 300,
            default_scopes: vec![
                Scope::TasksRun,
                Scope::TasksRead,
                Scope::PermissionsReply,
                Scope::Opencode,
            ],
        }
    }
}

/// Why a pairing call failed.
#[derive(Debug, thiserror::Error)]
pub enum PairingError {
    #[error("pairing happens over the host's TLS port, not over this connection")]
    NotTls,
    #[error("no pairing window is open on the host")]
    NoWindow,
    #[error(
        "the pairing code has expired: the host's owner must run `openwork-host pair` again for a new code"
    )]
    Expired,
    #[error(
        "the pairing code no longer works ({0}): the host's owner must run `openwork-host pair` again for a new code"
    )]
    WindowClosed(String),
    #[error(
        "a pairing window is already open (its code works for another {}s); closing it would make its code stop working",
        expires_in.as_secs().max(1)
    )]
    WindowOpen { expires_in: Duration },
    #[error("the host has no network listener to pair over")]
    NoListener,
    #[error(
        "the pairing window is closed: it closed after {0} wrong codes, and no code works until the host's owner opens a new one with `openwork-host pair`"
    )]
    TooManyFailures(u32),
    #[error("a wrong code was entered; wait {}s before trying again", retry_after.as_millis().div_ceil(1000).max(1))]
    Paused { retry_after: Duration },
    #[error("another device is pairing with the host right now")]
    Busy,
    #[error(
        "no pairing exchange `{0}` is in progress on this connection (it was used, has expired, or belongs to another connection)"
    )]
    NoExchange(String),
    #[error("the code is wrong ({remaining} attempts left before the window closes)")]
    WrongCode { remaining: u32 },
    #[error(
        "the code does not match the host's pairing window: it was mistyped, or it is the code of an earlier window that {earlier} ({remaining} attempts left before the window closes)"
    )]
    StaleCode {
        remaining: u32,
        /// `expired` or `was replaced by a newer one`.
        earlier: &'static str,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the host's owner declined this device")]
    Denied,
    #[error("no one approved the pairing in time")]
    ApprovalTimeout,
    #[error("the pairing window closed before the device was approved{}", if .0.is_empty() { String::new() } else { format!(" ({})", .0) })]
    ClosedBeforeApproval(String),
    #[error("pairing request `{0}` not found (it was answered, expired, or the device left)")]
    NoRequest(String),
    #[error("the device disconnected before it was approved")]
    DeviceLeft,
    #[error(
        "the device disconnected before it received its credential, so it is not paired; the window is still open for it to try again"
    )]
    NotDelivered,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the host tells devices about itself.
#[derive(Debug, Clone)]
pub(crate) struct HostFacts {
    pub host_id: String,
    pub host_name: String,
    pub fingerprint: String,
}

/// Where devices reach the host: the address to show and the TLS port.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub address: String,
    pub port: u16,
}

/// What a confirmation led to.
enum Confirmed {
    Awaiting {
        decision: oneshot::Receiver<Decision>,
        request_id: String,
        address: String,
        device_name: String,
    },
    Wrong {
        address: String,
        device_name: String,
        error: PairingError,
    },
    Refused(PairingError),
}

enum Decision {
    Approved {
        device: Device,
        token: Option<String>,
        /// Told whether the credential reached a connection that is still open.
        delivered: oneshot::Sender<bool>,
    },
    Denied,
}

struct Exchange {
    id: String,
    session_id: u64,
    expires_at: Instant,
    reply: crypto::HostReply,
    device_name: String,
    scopes: Vec<Scope>,
    address: String,
    /// A browser's public key (SPKI DER), its credential once approved.
    public_key: Option<Vec<u8>>,
}

struct Awaiting {
    request: PairingRequest,
    scopes: Vec<Scope>,
    public_key: Option<Vec<u8>>,
    session_id: u64,
    /// Cancelled when the device's connection is gone.
    gone: CancellationToken,
    decide: oneshot::Sender<Decision>,
}

struct OpenWindow {
    serial: u64,
    code: String,
    scopes: Vec<Scope>,
    expires_at: Instant,
    expires_at_ms: i64,
    failures: u32,
    paused_until: Option<Instant>,
    exchange: Option<Exchange>,
    awaiting: Option<Awaiting>,
    /// How the window before this one ended, while its code may still be in
    /// someone's hands (until its own expiry): a wrong code is then likely
    /// that code, and the device is told so.
    earlier: Option<(Instant, &'static str)>,
}

/// The pairing window's state.
enum WindowState {
    Closed { reason: Option<String> },
    Open(Box<OpenWindow>),
}

/// The longest and shortest a pairing code may be valid.
pub(crate) const MAX_TTL_S: u64 = 3600;
pub(crate) const MIN_TTL_S: u64 = 1;

/// Checks a device name before anyone is shown it: 1 to 64 characters, none
/// of which can hide or disguise text on the owner's terminal (controls,
/// bidirectional overrides and isolates, zero-width characters, line and
/// paragraph separators, other invisible format characters).
pub(crate) fn check_device_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if name.trim().is_empty() {
        return Err(
            "`deviceName` is empty: give the device a name its owner will recognise".into(),
        );
    }
    if count > MAX_DEVICE_NAME_CHARS {
        return Err(format!(
            "`deviceName` is {count} characters long; at most {MAX_DEVICE_NAME_CHARS} are allowed"
        ));
    }
    if let Some(c) = name.chars().find(|&c| disguises_text(c)) {
        return Err(format!(
            "`deviceName` contains U+{:04X} ({}), which could disguise the name shown to the host's owner; use a name without it",
            c as u32,
            describe_hidden(c)
        ));
    }
    Ok(())
}

/// `name` with every character that could disguise it written as `\u{…}`,
/// for showing names that were stored before they were checked.
pub fn escape_hidden(name: &str) -> String {
    name.chars()
        .map(|c| {
            if disguises_text(c) {
                format!("\\u{{{:04X}}}", c as u32)
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The most characters a device name may have.
pub(crate) const MAX_DEVICE_NAME_CHARS: usize = 64;

/// Characters that change or hide what a terminal shows around them.
fn disguises_text(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00AD}'               // soft hyphen
            | '\u{034F}'             // combining grapheme joiner
            | '\u{061C}'             // arabic letter mark
            | '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' // hangul fillers
            | '\u{17B4}' | '\u{17B5}'
            | '\u{180B}'..='\u{180F}' // mongolian variation selectors and vowel separator
            | '\u{200B}'..='\u{200F}' // zero-width space, joiners, LRM, RLM
            | '\u{2028}'..='\u{202E}' // line/paragraph separators, bidi embeddings and overrides
            | '\u{2060}'..='\u{206F}' // word joiner, invisible operators, bidi isolates
            | '\u{FE00}'..='\u{FE0F}' // variation selectors
            | '\u{FEFF}'             // zero-width no-break space
            | '\u{FFF9}'..='\u{FFFB}' // interlinear annotations
            | '\u{E0000}'..='\u{E007F}' // tags
        )
}

fn describe_hidden(c: char) -> &'static str {
    match c {
        '\u{2028}' => "a line separator",
        '\u{2029}' => "a paragraph separator",
        '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{061C}' => "a bidirectional text control",
        '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}' => "a zero-width character",
        c if c.is_control() => "a control character",
        _ => "an invisible formatting character",
    }
}

/// A QR code of `text`, row by row: `1` dark, `0` light (no quiet zone).
fn qr_rows(text: &str) -> Option<Vec<String>> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    Some(
        colors
            .chunks(width)
            .map(|row| {
                row.iter()
                    .map(|c| if *c == qrcode::Color::Dark { '1' } else { '0' })
                    .collect()
            })
            .collect(),
    )
}

/// Pairing for the whole host.
pub(crate) struct Pairing {
    config: PairingConfig,
    devices: Devices,
    facts: HostFacts,
    endpoint: Mutex<Option<Endpoint>>,
    state: Mutex<WindowState>,
    serial: std::sync::atomic::AtomicU64,
    events: broadcast::Sender<Bytes>,
    /// Whether a window is open, for those who follow it (mDNS's `pair` flag).
    open_flag: watch::Sender<bool>,
    /// One-time links for the owner's console (`openwork-host ui`).
    console: console::Links,
    me: Weak<Pairing>,
}

/// Scopes in the stable order of `Scope::ALL`, limited to `allowed`.
fn within(asked: &[Scope], allowed: &[Scope]) -> Vec<Scope> {
    Scope::ALL
        .into_iter()
        .filter(|s| asked.contains(s) && allowed.contains(s))
        .collect()
}

fn scope_infos(scopes: &[Scope]) -> Vec<ScopeInfo> {
    scopes
        .iter()
        .map(|&scope| ScopeInfo {
            scope,
            description: scope.description().to_owned(),
        })
        .collect()
}

impl Pairing {
    pub(crate) fn new(config: PairingConfig, devices: Devices, facts: HostFacts) -> Arc<Pairing> {
        Arc::new_cyclic(|me| Pairing {
            config,
            devices,
            facts,
            endpoint: Mutex::new(None),
            state: Mutex::new(WindowState::Closed { reason: None }),
            serial: std::sync::atomic::AtomicU64::new(0),
            events: broadcast::channel(64).0,
            open_flag: watch::channel(false).0,
            console: console::Links::default(),
            me: me.clone(),
        })
    }

    /// Sets where devices reach the host (once the TLS listener is bound).
    pub(crate) fn set_endpoint(&self, endpoint: Endpoint) {
        *self.endpoint.lock() = Some(endpoint);
    }

    /// Operator notifications: `pairing.requested`, `pairing.failed`, `pairing.closed`.
    pub(crate) fn events(&self) -> broadcast::Receiver<Bytes> {
        self.events.subscribe()
    }

    fn emit<P: serde::Serialize>(&self, notification: &Notification<P>, params: &P) {
        let _ = self.events.send(notification.encode(params));
    }

    /// Changes whenever a window opens (true) or closes for any reason (used,
    /// denied, expired, too many wrong codes). Two changes racing may arrive
    /// out of order, so a follower reads `is_open` when told of a change.
    pub(crate) fn watch_open(&self) -> watch::Receiver<bool> {
        self.open_flag.subscribe()
    }

    /// Every way a window ends goes through here, so that followers of
    /// `watch_open` never miss a close.
    fn window_closed(&self, reason: &str, device_id: Option<String>) {
        self.open_flag.send_replace(false);
        self.emit(
            &notifications::PAIRING_CLOSED,
            &PairingClosed {
                reason: reason.to_owned(),
                device_id,
            },
        );
    }

    /// Whether a window is open now (for mDNS's `pair=1`).
    pub(crate) fn is_open(&self) -> bool {
        matches!(&*self.state.lock(), WindowState::Open(w) if w.expires_at > Instant::now())
    }

    /// Opens a window with a fresh single-use code, closing any open one.
    pub(crate) fn open(&self, params: PairingOpenParams) -> Result<PairingWindow, PairingError> {
        let endpoint = self
            .endpoint
            .lock()
            .clone()
            .ok_or(PairingError::NoListener)?;
        let ttl_s = params.ttl_s.unwrap_or(self.config.default_ttl_s);
        if !(MIN_TTL_S..=MAX_TTL_S).contains(&ttl_s) {
            return Err(PairingError::Invalid(format!(
                "`ttlS` must be {MIN_TTL_S} to {MAX_TTL_S} seconds (a code valid for {ttl_s}s {})",
                if ttl_s == 0 {
                    "could never be used"
                } else {
                    "would give guessers too long"
                }
            )));
        }
        let ttl = Duration::from_secs(ttl_s);
        let scopes = within(
            params
                .scopes
                .as_deref()
                .unwrap_or(&self.config.default_scopes),
            &Scope::ALL,
        );
        if scopes.is_empty() {
            return Err(PairingError::Invalid(
                "a pairing window must offer at least one scope".into(),
            ));
        }
        let code = format!("{:08}", rand::rng().random_range(0..100_000_000u32));
        let serial = self
            .serial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        let expires_at_ms = clock::now_ms() + ttl.as_millis() as i64;
        let address = params.address.unwrap_or(endpoint.address);
        let now = Instant::now();
        let mut state = self.state.lock();
        // A window is replaced only when asked: its code may be on its way
        // to a device, which would then be told its code is wrong.
        let earlier = match &*state {
            WindowState::Open(w) if w.expires_at > now => {
                if params.replace != Some(true) {
                    return Err(PairingError::WindowOpen {
                        expires_in: w.expires_at - now,
                    });
                }
                Some((w.expires_at, "was replaced by a newer one"))
            }
            WindowState::Open(w) => Some((w.expires_at + ttl, "expired")),
            WindowState::Closed { reason: Some(r) } if r == "expired" => {
                Some((now + ttl, "expired"))
            }
            WindowState::Closed { .. } => None,
        };
        let previous = std::mem::replace(
            &mut *state,
            WindowState::Open(Box::new(OpenWindow {
                serial,
                code: code.clone(),
                scopes: scopes.clone(),
                expires_at: Instant::now() + ttl,
                expires_at_ms,
                failures: 0,
                paused_until: None,
                exchange: None,
                awaiting: None,
                earlier,
            })),
        );
        drop(state);
        if matches!(&previous, WindowState::Open(w) if w.expires_at > now) {
            self.window_closed("replaced by a new window", None);
        }
        drop(previous);
        self.open_flag.send_replace(true);
        if let Some(me) = self.me.upgrade() {
            tokio::spawn(async move {
                tokio::time::sleep(ttl).await;
                me.close_if(serial, "expired");
            });
        }
        let uri = crate::client::pair::PairLink::app_uri(
            &address,
            endpoint.port,
            &code,
            &self.facts.fingerprint,
            &self.facts.host_id,
        );
        let web_uri = crate::client::pair::PairLink::web_url(
            &address,
            endpoint.port,
            &code,
            &self.facts.fingerprint,
            &self.facts.host_id,
        );
        Ok(PairingWindow {
            web_qr: qr_rows(&web_uri),
            web_uri: Some(web_uri),
            code,
            expires_at: clock::rfc3339(expires_at_ms),
            scopes,
            uri,
            host: address,
            port: endpoint.port,
            fingerprint: self.facts.fingerprint.clone(),
            host_id: self.facts.host_id.clone(),
            host_name: self.facts.host_name.clone(),
        })
    }

    /// Closes the window, whatever its state.
    pub(crate) fn close(&self, reason: &str) -> bool {
        let previous = std::mem::replace(
            &mut *self.state.lock(),
            WindowState::Closed {
                reason: Some(reason.to_owned()),
            },
        );
        let was_open = matches!(previous, WindowState::Open(_));
        if was_open {
            self.window_closed(reason, None);
        }
        was_open
    }

    fn close_if(&self, serial: u64, reason: &str) {
        let mut state = self.state.lock();
        if matches!(&*state, WindowState::Open(w) if w.serial == serial) {
            *state = WindowState::Closed {
                reason: Some(reason.to_owned()),
            };
            drop(state);
            self.window_closed(reason, None);
        }
    }

    /// The window and who waits for approval.
    pub(crate) fn status(&self) -> PairingStatus {
        let state = self.state.lock();
        match &*state {
            WindowState::Open(w) if w.expires_at > Instant::now() => PairingStatus {
                open: true,
                expires_at: Some(clock::rfc3339(w.expires_at_ms)),
                failures: w.failures,
                max_failures: self.config.max_failures,
                pending: w.awaiting.iter().map(|a| a.request.clone()).collect(),
                closed_reason: None,
            },
            WindowState::Open(_) => PairingStatus {
                open: false,
                expires_at: None,
                failures: 0,
                max_failures: self.config.max_failures,
                pending: Vec::new(),
                closed_reason: Some("expired".into()),
            },
            WindowState::Closed { reason } => PairingStatus {
                open: false,
                expires_at: None,
                failures: 0,
                max_failures: self.config.max_failures,
                pending: Vec::new(),
                closed_reason: reason.clone(),
            },
        }
    }

    /// `pairing.begin`: answers a device's SPAKE2 message.
    pub(crate) fn begin(
        &self,
        session_id: u64,
        address: &str,
        tls_exporter: Option<&[u8; 32]>,
        params: PairingBeginParams,
    ) -> Result<PairingBeginResult, PairingError> {
        let exporter = tls_exporter.ok_or(PairingError::NotTls)?;
        let device_name = params.device_name.trim().to_owned();
        check_device_name(&device_name).map_err(PairingError::Invalid)?;
        let client_message = B64
            .decode(&params.spake)
            .map_err(|_| PairingError::Invalid("`spake` must be base64".into()))?;
        let public_key = match &params.public_key {
            Some(key) => {
                let der = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim_end_matches('='))
                    .ok()
                    .filter(|der| crate::auth::parse_public_key(der).is_ok())
                    .ok_or_else(|| PairingError::Invalid(crate::auth::BadPublicKey.to_string()))?;
                Some(der)
            }
            None => None,
        };
        let now = Instant::now();
        let mut state = self.state.lock();
        let WindowState::Open(window) = &mut *state else {
            return Err(match &*state {
                WindowState::Closed { reason: Some(r) } => self.closed_error(r),
                _ => PairingError::NoWindow,
            });
        };
        if window.expires_at <= now {
            return Err(PairingError::Expired);
        }
        if let Some(until) = window.paused_until
            && until > now
        {
            return Err(PairingError::Paused {
                retry_after: until - now,
            });
        }
        if window.awaiting.is_some() {
            return Err(PairingError::Busy);
        }
        if let Some(exchange) = &window.exchange
            && exchange.expires_at > now
            && exchange.session_id != session_id
        {
            return Err(PairingError::Busy);
        }
        // An exchange left without a right confirmation counts as a wrong
        // code: the host's confirmation tells a device whether its guess was
        // right, so a guesser who never confirms must still pay for each guess.
        if let Some(abandoned) = window.exchange.take()
            && self.count_failure(window, &abandoned)
        {
            *state = WindowState::Closed {
                reason: Some("too many wrong codes".into()),
            };
            drop(state);
            self.window_closed("too many wrong codes", None);
            return Err(PairingError::TooManyFailures(self.config.max_failures));
        }
        let scopes = within(
            params.scopes.as_deref().unwrap_or(&window.scopes),
            &window.scopes,
        );
        if scopes.is_empty() {
            return Err(PairingError::Invalid(format!(
                "none of the scopes asked for is offered by this pairing window (it offers {})",
                window
                    .scopes
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let scope_names: Vec<String> = scopes.iter().map(|s| s.as_str().to_owned()).collect();
        let ctx = crypto::Context {
            tls_exporter: exporter,
            host_fingerprint: &self.facts.fingerprint,
            device_name: &device_name,
            scopes: &scope_names,
            public_key: public_key.as_deref(),
        };
        let reply = crypto::host_respond(&window.code, &ctx, &client_message)
            .map_err(|e| PairingError::Invalid(format!("`spake`: {e}")))?;
        let result = PairingBeginResult {
            exchange_id: ids::random_id("px_"),
            spake: B64.encode(&reply.message),
            host_confirm: B64.encode(reply.host_confirmation),
            scopes: scopes.clone(),
        };
        window.exchange = Some(Exchange {
            id: result.exchange_id.clone(),
            session_id,
            expires_at: now + Duration::from_secs(self.config.exchange_timeout_s),
            reply,
            device_name,
            scopes,
            address: address.to_owned(),
            public_key,
        });
        Ok(result)
    }

    /// `pairing.confirm`: checks the device's confirmation, then waits for the
    /// owner's decision (or for `gone`, when the device disconnects).
    pub(crate) async fn confirm(
        &self,
        session_id: u64,
        params: PairingConfirmParams,
        gone: CancellationToken,
    ) -> Result<PairingResult, PairingError> {
        let confirmation = B64.decode(&params.client_confirm).unwrap_or_default();
        let step = self.check_confirmation(session_id, &params.exchange_id, &confirmation, &gone);
        let (decision, request_id, address, device_name) = match step {
            Confirmed::Awaiting {
                decision,
                request_id,
                address,
                device_name,
            } => (decision, request_id, address, device_name),
            Confirmed::Wrong {
                address,
                device_name,
                error,
            } => {
                self.record(&address, &device_name, "wrong code").await;
                return Err(error);
            }
            Confirmed::Refused(error) => return Err(error),
        };
        // If this call is dropped while it waits (the connection ended and its
        // calls were cancelled, or `$/cancelRequest`), the request goes too.
        let mut guard = WithdrawOnDrop {
            pairing: self,
            request_id: Some(request_id.clone()),
        };
        let timeout = Duration::from_secs(self.config.approval_timeout_s);
        let outcome = tokio::select! {
            biased;
            _ = gone.cancelled() => Err(("the device disconnected", PairingError::DeviceLeft)),
            decided = decision => match decided {
                Ok(Decision::Approved { device, token, delivered }) => Ok((device, token, delivered)),
                Ok(Decision::Denied) => Err(("denied", PairingError::Denied)),
                Err(_) => Err(("not approved", PairingError::ClosedBeforeApproval(
                    self.status().closed_reason.unwrap_or_else(|| "replaced by a new window".into()),
                ))),
            },
            _ = tokio::time::sleep(timeout) => Err(("no approval in time", PairingError::ApprovalTimeout)),
        };
        guard.request_id = None;
        let (device, token, delivered) = match outcome {
            Ok(approved) => approved,
            Err((why, e)) => {
                if matches!(e, PairingError::DeviceLeft | PairingError::ApprovalTimeout) {
                    self.withdraw(&request_id, why);
                }
                // A refusal is recorded by `deny` itself.
                if !matches!(e, PairingError::Denied) {
                    self.record(&address, &device_name, why).await;
                }
                return Err(e);
            }
        };
        // The credential goes only to a connection that is still there; a
        // device that left meanwhile is removed, so that it is never listed
        // as paired without having its token.
        if gone.is_cancelled() {
            if let Err(e) = self.devices.discard(&device.id).await {
                tracing::warn!(error = %e, device = %device.id, "could not remove a device that never got its credential");
            }
            let _ = delivered.send(false);
            self.record(
                &address,
                &device_name,
                "left before receiving its credential",
            )
            .await;
            return Err(PairingError::DeviceLeft);
        }
        let _ = delivered.send(true);
        Ok(PairingResult {
            device_id: device.id,
            token,
            scopes: device.scopes,
            host_id: self.facts.host_id.clone(),
            host_name: self.facts.host_name.clone(),
            fingerprint: self.facts.fingerprint.clone(),
        })
    }

    /// Counts a failed exchange; returns whether that was the last try.
    fn count_failure(&self, window: &mut OpenWindow, exchange: &Exchange) -> bool {
        window.failures += 1;
        window.paused_until =
            Some(Instant::now() + Duration::from_millis(self.config.failure_pause_ms));
        let remaining = self.config.max_failures.saturating_sub(window.failures);
        self.emit(
            &notifications::PAIRING_FAILED,
            &PairingFailed {
                address: exchange.address.clone(),
                device_name: exchange.device_name.clone(),
                failures: window.failures,
                remaining,
            },
        );
        remaining == 0
    }

    /// A connection closed: an exchange it left unconfirmed counts as a wrong
    /// code and frees the window for the next device.
    pub(crate) fn connection_closed(&self, session_id: u64) {
        let mut state = self.state.lock();
        let WindowState::Open(window) = &mut *state else {
            return;
        };
        if let Some(request_id) = window
            .awaiting
            .as_ref()
            .filter(|a| a.session_id == session_id)
            .map(|a| a.request.request_id.clone())
        {
            drop(state);
            self.withdraw(&request_id, "the device disconnected");
            return;
        }
        if window
            .exchange
            .as_ref()
            .is_none_or(|e| e.session_id != session_id)
        {
            return;
        }
        let Some(abandoned) = window.exchange.take() else {
            return;
        };
        if self.count_failure(window, &abandoned) {
            *state = WindowState::Closed {
                reason: Some("too many wrong codes".into()),
            };
            drop(state);
            self.window_closed("too many wrong codes", None);
        }
    }

    /// Checks a device's confirmation under the lock: counts a wrong code, or
    /// puts the device in front of the owner.
    fn check_confirmation(
        &self,
        session_id: u64,
        exchange_id: &str,
        confirmation: &[u8],
        gone: &CancellationToken,
    ) -> Confirmed {
        let mut state = self.state.lock();
        let WindowState::Open(window) = &mut *state else {
            return Confirmed::Refused(PairingError::NoExchange(exchange_id.to_owned()));
        };
        let exchange = match window.exchange.take() {
            Some(e)
                if e.id == exchange_id
                    && e.session_id == session_id
                    && e.expires_at > Instant::now() =>
            {
                e
            }
            other => {
                window.exchange = other;
                return Confirmed::Refused(PairingError::NoExchange(exchange_id.to_owned()));
            }
        };
        if !exchange.reply.verify_client(confirmation) {
            let error = if self.count_failure(window, &exchange) {
                *state = WindowState::Closed {
                    reason: Some("too many wrong codes".into()),
                };
                self.window_closed("too many wrong codes", None);
                PairingError::TooManyFailures(self.config.max_failures)
            } else {
                let remaining = self.config.max_failures.saturating_sub(window.failures);
                match window.earlier {
                    Some((until, earlier)) if until > Instant::now() => {
                        PairingError::StaleCode { remaining, earlier }
                    }
                    _ => PairingError::WrongCode { remaining },
                }
            };
            return Confirmed::Wrong {
                address: exchange.address,
                device_name: exchange.device_name,
                error,
            };
        }
        let (decide, decision) = oneshot::channel();
        let timeout = Duration::from_secs(self.config.approval_timeout_s);
        let request = PairingRequest {
            request_id: ids::random_id("pr_"),
            device_name: exchange.device_name.clone(),
            scopes: scope_infos(&exchange.scopes),
            address: exchange.address.clone(),
            expires_at: clock::rfc3339(clock::now_ms() + timeout.as_millis() as i64),
        };
        self.emit(&notifications::PAIRING_REQUESTED, &request);
        let request_id = request.request_id.clone();
        window.awaiting = Some(Awaiting {
            request,
            scopes: exchange.scopes,
            public_key: exchange.public_key,
            session_id,
            gone: gone.clone(),
            decide,
        });
        Confirmed::Awaiting {
            decision,
            request_id,
            address: exchange.address,
            device_name: exchange.device_name,
        }
    }

    /// Withdraws `request_id` if it still waits for the owner: the owner is
    /// told, and the window stays open (until it expires) for the device to
    /// try again.
    fn withdraw(&self, request_id: &str, reason: &str) {
        let mut state = self.state.lock();
        let WindowState::Open(window) = &mut *state else {
            return;
        };
        if window
            .awaiting
            .as_ref()
            .is_none_or(|a| a.request.request_id != request_id)
        {
            return;
        }
        let Some(awaiting) = window.awaiting.take() else {
            return;
        };
        let window_open = window.expires_at > Instant::now();
        drop(state);
        self.announce_withdrawn(&awaiting.request, reason, window_open);
    }

    fn announce_withdrawn(&self, request: &PairingRequest, reason: &str, window_open: bool) {
        tracing::info!(request = %request.request_id, reason, "a pairing request was withdrawn");
        self.emit(
            &notifications::PAIRING_WITHDRAWN,
            &PairingWithdrawn {
                request_id: request.request_id.clone(),
                device_name: request.device_name.clone(),
                address: request.address.clone(),
                reason: reason.to_owned(),
                window_open,
            },
        );
    }

    /// What a device is told when the window it wants is closed.
    fn closed_error(&self, reason: &str) -> PairingError {
        match reason {
            "expired" => PairingError::Expired,
            "too many wrong codes" => PairingError::TooManyFailures(self.config.max_failures),
            "paired" => PairingError::WindowClosed("it was used to pair a device".into()),
            "closed by the owner" => {
                PairingError::WindowClosed("the host's owner closed the pairing window".into())
            }
            "denied by the owner" => PairingError::WindowClosed(
                "the host's owner refused the device that used it".into(),
            ),
            other => PairingError::WindowClosed(format!("the pairing window closed: {other}")),
        }
    }

    fn take_awaiting(&self, request_id: &str) -> Result<Awaiting, PairingError> {
        let mut state = self.state.lock();
        match &mut *state {
            WindowState::Open(window)
                if window
                    .awaiting
                    .as_ref()
                    .is_some_and(|a| a.request.request_id == request_id) =>
            {
                window
                    .awaiting
                    .take()
                    .ok_or_else(|| PairingError::NoRequest(request_id.to_owned()))
            }
            _ => Err(PairingError::NoRequest(request_id.to_owned())),
        }
    }

    /// The owner approves: the device gets a credential with `scopes` (at most what it asked for).
    pub(crate) async fn approve(
        &self,
        request_id: &str,
        scopes: Option<Vec<Scope>>,
    ) -> Result<DeviceInfo, PairingError> {
        let awaiting = self.take_awaiting(request_id)?;
        if awaiting.gone.is_cancelled() {
            self.announce_withdrawn(&awaiting.request, "the device disconnected", true);
            return Err(PairingError::NotDelivered);
        }
        let granted = within(
            scopes.as_deref().unwrap_or(&awaiting.scopes),
            &awaiting.scopes,
        );
        if granted.is_empty() {
            self.drop_request_after_take("approved with no scope");
            return Err(PairingError::Invalid(
                "approve with at least one of the scopes the device asked for".into(),
            ));
        }
        let request = awaiting.request.clone();
        let (device, token) = match awaiting.public_key {
            Some(key) => {
                let device = self
                    .devices
                    .create_with_key(&request.device_name, &granted, &request.address, key)
                    .await?;
                (device, None)
            }
            None => {
                let (device, token) = self
                    .devices
                    .create(&request.device_name, &granted, &request.address)
                    .await?;
                (device, Some(token))
            }
        };
        let info = device.info(0);
        let device_id = device.id.clone();
        let (delivered_tx, delivered) = oneshot::channel();
        let sent = awaiting.decide.send(Decision::Approved {
            device,
            token,
            delivered: delivered_tx,
        });
        // The device's call answers `delivered` at once; it is bounded only
        // in case that call was dropped between the two steps.
        let delivered = sent.is_ok()
            && tokio::time::timeout(Duration::from_secs(10), delivered)
                .await
                .is_ok_and(|d| d.unwrap_or(false));
        if !delivered {
            self.devices.discard(&device_id).await?;
            self.announce_withdrawn(&request, "the device disconnected", true);
            self.record(
                &request.address,
                &request.device_name,
                "left before receiving its credential",
            )
            .await;
            return Err(PairingError::NotDelivered);
        }
        *self.state.lock() = WindowState::Closed {
            reason: Some("paired".into()),
        };
        self.window_closed("paired", Some(device_id));
        self.record(&request.address, &request.device_name, "approved")
            .await;
        Ok(info)
    }

    /// The owner declines: the device is told, and the window closes (the code
    /// was used by someone the owner does not want).
    pub(crate) async fn deny(&self, request_id: &str) -> Result<(), PairingError> {
        let awaiting = self.take_awaiting(request_id)?;
        let _ = awaiting.decide.send(Decision::Denied);
        self.drop_request_after_take("denied by the owner");
        self.record(
            &awaiting.request.address,
            &awaiting.request.device_name,
            "denied",
        )
        .await;
        Ok(())
    }

    fn drop_request_after_take(&self, reason: &str) {
        *self.state.lock() = WindowState::Closed {
            reason: Some(reason.to_owned()),
        };
        self.window_closed(reason, None);
    }

    async fn record(&self, address: &str, device_name: &str, outcome: &str) {
        if let Err(e) = self
            .devices
            .record_attempt(address, device_name, outcome)
            .await
        {
            tracing::warn!(error = %e, "could not record a pairing attempt");
        }
    }
}

/// Withdraws a request whose `pairing.confirm` call was dropped while it
/// waited for the owner.
struct WithdrawOnDrop<'a> {
    pairing: &'a Pairing,
    request_id: Option<String>,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(request_id) = self.request_id.take() {
            self.pairing.withdraw(&request_id, "the device cancelled");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_disguise_themselves_are_refused_and_plain_ones_pass() {
        for name in ["Anna's phone", "电话 📱", "laptop-2 (work)", "Ωμέγα"] {
            assert_eq!(check_device_name(name), Ok(()), "{name:?}");
        }
        for (name, shown) in [
            ("a\u{202E}b", "U+202E"),
            ("a\u{2066}b", "U+2066"),
            ("a\u{200D}b", "U+200D"),
            ("a\u{2029}b", "U+2029"),
            ("a\u{0007}b", "U+0007"),
            ("a\u{E0041}b", "U+E0041"),
        ] {
            let refused = check_device_name(name).unwrap_err();
            assert!(refused.contains(shown), "{name:?}: {refused}");
        }
        assert!(check_device_name(" ").is_err());
        assert!(check_device_name(&"x".repeat(MAX_DEVICE_NAME_CHARS)).is_ok());
        assert!(check_device_name(&"x".repeat(MAX_DEVICE_NAME_CHARS + 1)).is_err());
    }

    #[test]
    fn hidden_characters_are_shown_escaped() {
        assert_eq!(escape_hidden("a\u{202E}b\u{200B}"), "a\\u{202E}b\\u{200B}");
        assert_eq!(escape_hidden("plain — name"), "plain — name");
    }
}
