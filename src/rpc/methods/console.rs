//! The owner's console: `console.link` (its one-time link), `console.enrol`
//! (a browser redeeming it), `console.overview` (set-up facts) and
//! `metrics.series` (the counters hour by hour).

use std::collections::BTreeMap;

use crate::clock;
use crate::metrics::{self, HOUR_MS};
use crate::permissions::policy::default_rules;
use crate::protocol::{
    ConsoleEnrolParams, ConsoleLink, ConsoleLinkParams, ConsoleOverview, MetricsBucket,
    MetricsSeries, MetricsSeriesParams, NoParams, PairingResult, PolicyRuleInfo, SettingInfo,
};
use crate::rpc::RpcError;
use crate::rpc::methods::CallContext;
use crate::runtime::opencode::{Enabled, INSTALL_ACTION};

pub(super) async fn link(ctx: CallContext, p: ConsoleLinkParams) -> Result<ConsoleLink, RpcError> {
    Ok(ctx.host().console_link(p.ttl_s)?)
}

pub(super) async fn enrol(
    ctx: CallContext,
    p: ConsoleEnrolParams,
) -> Result<PairingResult, RpcError> {
    Ok(ctx.host().console_enrol(&ctx.session, p).await?)
}

fn setting(name: &str, value: impl Into<String>, meaning: &str) -> SettingInfo {
    SettingInfo {
        name: name.to_owned(),
        value: value.into(),
        meaning: meaning.to_owned(),
    }
}

pub(super) async fn overview(ctx: CallContext, _: NoParams) -> Result<ConsoleOverview, RpcError> {
    let host = ctx.host();
    let config = host.config();
    let endpoint = host.pairing_endpoint();
    let lan_address_is_loopback = endpoint.as_ref().is_some_and(|e| {
        e.address == "localhost"
            || e.address
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    let opencode_enabled = match config.opencode.enabled {
        Enabled::Auto => "auto",
        Enabled::On => "on",
        Enabled::Off => "off",
    };
    let roots = config
        .tasks
        .workspace_roots
        .iter()
        .map(|r| r.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let settings = vec![
        setting(
            "[host] name",
            host.host_name().to_owned(),
            "the name devices show for this host, and the name it advertises on the LAN",
        ),
        setting(
            "[network] listen",
            {
                let bound = host
                    .listeners()
                    .into_iter()
                    .filter(|l| l.transport == "tls")
                    .map(|l| l.address)
                    .collect::<Vec<_>>()
                    .join(", ");
                let configured = if config.network.listen.is_empty() {
                    "not set: [::]:4747, every interface".to_owned()
                } else {
                    config.network.listen.join(", ")
                };
                format!(
                    "listening on {}; config: {configured}",
                    if bound.is_empty() { "nothing" } else { &bound }
                )
            },
            "where the host takes connections from devices and browsers (TLS); `serve --listen` overrides the config",
        ),
        setting(
            "[network] advertise_address",
            config
                .network
                .advertise_address
                .clone()
                .unwrap_or_else(|| "not set: the first LAN IPv4 address".into()),
            "the address put in pairing links and QR codes: the one phones will connect to",
        ),
        setting(
            "[network] certificate",
            config.network.certificate.as_ref().map_or_else(
                || "not set: the host's own self-signed certificate (browsers warn once)".into(),
                |p| p.display().to_string(),
            ),
            "a certificate browsers trust (e.g. from `tailscale cert`), so that phones see no warning; native devices keep the host's own",
        ),
        setting(
            "[discovery] enabled",
            config.discovery.enabled.to_string(),
            "whether the host announces itself on the LAN (mDNS), so that devices find it by name",
        ),
        setting(
            "[pairing] default_ttl_s",
            config.pairing.default_ttl_s.to_string(),
            "how long a pairing code works when none is chosen",
        ),
        setting(
            "[devices] remote_admin",
            config.devices.remote_admin.to_string(),
            "whether paired devices holding `admin` may also pair and revoke devices (the owner's console always may)",
        ),
        setting(
            "[tasks] workspace_roots",
            if roots.is_empty() {
                "your home directory".into()
            } else {
                roots
            },
            "the directories tasks may run in",
        ),
        setting(
            "[opencode] enabled",
            opencode_enabled,
            "`auto` runs OpenCode when it is installed, `on` requires it (a failing check when missing), `off` never runs it",
        ),
        setting(
            "[metrics] telemetry",
            config.metrics.telemetry.to_string(),
            "whether connection counters are kept (in host.db, never sent anywhere)",
        ),
    ];
    let mut policy = Vec::new();
    let mut add = |rules: &[crate::permissions::policy::RuleConfig], source: &str| {
        for r in rules {
            policy.push(PolicyRuleInfo {
                id: r.id.clone(),
                action: match r.action {
                    crate::permissions::policy::Action::Allow => "allow",
                    crate::permissions::policy::Action::Ask => "ask",
                    crate::permissions::policy::Action::Deny => "deny",
                }
                .to_owned(),
                program: r.program.clone(),
                args: r.args.clone(),
                pattern: r.pattern.clone(),
                explain: r.explain.clone(),
                source: source.to_owned(),
            });
        }
    };
    add(&config.permissions.rules, "config");
    if config.permissions.use_default_rules {
        add(&default_rules(), "default");
    }
    let config_path = host.data_dir().config();
    Ok(ConsoleOverview {
        host_name: host.host_name().to_owned(),
        host_id: host.host_id().to_owned(),
        fingerprint: host.fingerprint().to_owned(),
        data_dir: host.data_dir().root().display().to_string(),
        config_exists: config_path.exists(),
        config_path: config_path.display().to_string(),
        lan_address: endpoint.as_ref().map(|e| e.address.clone()),
        port: endpoint.as_ref().map(|e| e.port),
        lan_address_is_loopback,
        opencode_enabled: opencode_enabled.to_owned(),
        opencode_install: INSTALL_ACTION.to_owned(),
        settings,
        policy,
    })
}

pub(super) async fn series(
    ctx: CallContext,
    p: MetricsSeriesParams,
) -> Result<MetricsSeries, RpcError> {
    let hours = p.hours.unwrap_or(24);
    if !(1..=168).contains(&hours) {
        return Err(RpcError::invalid_params("`hours` must be 1 to 168"));
    }
    let now_hour = clock::now_ms() / HOUR_MS * HOUR_MS;
    let since = now_hour - (i64::from(hours) - 1) * HOUR_MS;
    let mut buckets: BTreeMap<i64, MetricsBucket> = (0..i64::from(hours))
        .map(|i| {
            let start = since + i * HOUR_MS;
            (
                start,
                MetricsBucket {
                    start: clock::rfc3339(start),
                    ..MetricsBucket::default()
                },
            )
        })
        .collect();
    for (hour, status, n) in ctx.host().task_outcomes_by_hour(since).await? {
        if let Some(b) = buckets.get_mut(&hour) {
            b.tasks.add(status, n);
        }
    }
    for (hour, name, n) in ctx.host().metric_hours(since).await? {
        let Some(b) = buckets.get_mut(&hour) else {
            continue;
        };
        match name.as_str() {
            metrics::CONNECTIONS_ACCEPTED => b.connections += n,
            metrics::DISCONNECTS => b.disconnects += n,
            metrics::HANDSHAKE_FAILURES => b.handshake_failures += n,
            metrics::AUTH_FAILURES => b.auth_failures += n,
            metrics::REFUSED => b.refused += n,
            _ => {}
        }
    }
    Ok(MetricsSeries {
        bucket_s: (HOUR_MS / 1000) as u64,
        buckets: buckets.into_values().collect(),
        telemetry: ctx.host().telemetry(),
    })
}
