//! Terminal output: QR codes, grouped codes, durations, scope lists.

use openwork_host::auth::Scope;

/// A QR code drawn with half blocks, two rows per line.
pub fn qr(text: &str) -> Option<String> {
    let code = qrcode::QrCode::new(text.as_bytes()).ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

/// `12345678` as `1234 5678`, easier to read out.
pub fn grouped(text: &str, size: usize) -> String {
    text.chars()
        .collect::<Vec<_>>()
        .chunks(size)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Seconds as `3h 4m`, `2m 10s` or `42s`.
pub fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Parses `a,b,c` into scopes.
pub fn parse_scopes(list: &str) -> anyhow::Result<Vec<Scope>> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| {
            Scope::parse(name).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown scope `{name}`; the scopes are {}",
                    Scope::ALL
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
        })
        .collect()
}

/// Scopes with what each allows, one per line.
pub fn scope_lines(scopes: &[Scope]) -> String {
    scopes
        .iter()
        .map(|s| format!("      {:<18} {}", s.as_str(), s.description()))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Lines typed on stdin, read on a thread of their own.
pub fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    rx
}
