//! The host's log on stderr: every field escaped (a caller's text cannot
//! start a line of its own or drive the terminal), colour only on a
//! terminal, and repeated warnings from one place cut down to a count.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber, callsite};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Warnings (and errors) from one place of the code written per window.
const BURST: u32 = 5;
/// The window over which `BURST` is counted.
const WINDOW: Duration = Duration::from_secs(10);

/// What the rate limit left out, shared with the thread that reports it.
static LEFT_OUT: OnceLock<Places> = OnceLock::new();

/// Installs the stderr log with `filter`; counts of left-out warnings are
/// written once their window ends (and by `report_left_out`).
pub fn init(filter: EnvFilter) {
    let ansi = std::io::stderr().is_terminal();
    let places = Places::default();
    let _ = LEFT_OUT.set(places.clone());
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_ansi(ansi)
        .fmt_fields(EscapedFields)
        .map_event_format(|format| RateLimited::with_places(format, places))
        .init();
    let _ = std::thread::Builder::new()
        .name("log-counts".into())
        .spawn(|| {
            loop {
                std::thread::sleep(WINDOW);
                report_left_out();
            }
        });
}

/// Writes how many warnings each place had left out since the last report.
pub fn report_left_out() {
    let Some(places) = LEFT_OUT.get() else {
        return;
    };
    let counts: Vec<(&'static str, &'static str, &'static tracing::Level, u64)> = {
        let mut places = places.lock();
        places
            .values_mut()
            .filter(|p| p.left_out > 0)
            .map(|p| {
                let meta = p.meta;
                (
                    meta.name(),
                    meta.target(),
                    meta.level(),
                    std::mem::take(&mut p.left_out),
                )
            })
            .collect()
    };
    let mut stderr = std::io::stderr().lock();
    for (name, target, level, n) in counts {
        let _ = writeln!(
            stderr,
            "{} {level:>5} {target}: {n} more like {name} were left out (at most {BURST} every {} s)",
            humantime::format_rfc3339_micros(SystemTime::now()),
            WINDOW.as_secs()
        );
    }
}

/// Formats fields as `name=value`, with every control character in a value
/// (newlines and escape sequences included) written as an escape.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = Escaping {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct Escaping<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

/// Writes through to `inner`, escaping control characters.
struct EscapeControl<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for EscapeControl<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            if c.is_control() {
                for e in c.escape_default() {
                    self.0.write_char(e)?;
                }
            } else {
                self.0.write_char(c)?;
            }
        }
        Ok(())
    }
}

impl Visit for Escaping<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.result.is_err() {
            return;
        }
        let separator = if self.first { "" } else { " " };
        self.first = false;
        self.result = (|| {
            self.writer.write_str(separator)?;
            if field.name() != "message" {
                write!(self.writer, "{}=", field.name())?;
            }
            write!(EscapeControl(&mut self.writer), "{value:?}")
        })();
    }
}

/// Writes at most `BURST` warnings or errors from one place per `WINDOW`;
/// the next one written after a pause says how many were left out.
pub struct RateLimited<F> {
    inner: F,
    places: Places,
}

/// Each place's window.
#[derive(Clone, Default)]
struct Places(Arc<Mutex<HashMap<callsite::Identifier, Place>>>);

impl Places {
    fn lock(&self) -> parking_lot::MutexGuard<'_, HashMap<callsite::Identifier, Place>> {
        self.0.lock()
    }
}

struct Place {
    meta: &'static tracing::Metadata<'static>,
    since: Instant,
    written: u32,
    left_out: u64,
}

impl<F> RateLimited<F> {
    fn with_places(inner: F, places: Places) -> Self {
        RateLimited { inner, places }
    }

    /// Whether to write an event of `meta` now, and how many were left out before it.
    fn admit(&self, meta: &'static tracing::Metadata<'static>, now: Instant) -> Option<u64> {
        let mut places = self.places.lock();
        let state = places.entry(meta.callsite()).or_insert(Place {
            meta,
            since: now,
            written: 0,
            left_out: 0,
        });
        if now.duration_since(state.since) >= WINDOW {
            state.since = now;
            state.written = 0;
        }
        if state.written >= BURST {
            state.left_out += 1;
            return None;
        }
        state.written += 1;
        Some(std::mem::take(&mut state.left_out))
    }
}

impl<S, N, F> FormatEvent<S, N> for RateLimited<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let meta = event.metadata();
        // Levels order from ERROR (least) to TRACE.
        if *meta.level() > Level::WARN {
            return self.inner.format_event(ctx, writer, event);
        }
        let Some(left_out) = self.admit(meta, Instant::now()) else {
            return Ok(());
        };
        if left_out > 0 {
            writeln!(
                writer,
                "{} {:>5} {}: {left_out} more like the next line were left out (at most {BURST} every {} s)",
                humantime::format_rfc3339_micros(SystemTime::now()),
                meta.level(),
                meta.target(),
                WINDOW.as_secs()
            )?;
        }
        self.inner.format_event(ctx, writer, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Callsite as _;

    #[test]
    fn control_characters_are_escaped() {
        let mut out = String::new();
        write!(EscapeControl(&mut out), "a\nb\x1b[31mc\r").unwrap();
        assert_eq!(out, "a\\nb\\u{1b}[31mc\\r");
    }

    #[test]
    fn a_place_writes_a_burst_per_window_then_counts() {
        let limited = RateLimited::with_places((), Places::default());
        let place = CALLSITE.metadata();
        let start = Instant::now();
        for _ in 0..BURST {
            assert_eq!(limited.admit(place, start), Some(0));
        }
        assert_eq!(limited.admit(place, start), None);
        assert_eq!(limited.admit(place, start), None);
        assert_eq!(limited.admit(place, start + WINDOW), Some(2));
    }

    struct Site;
    static META: tracing::Metadata<'static> = tracing::Metadata::new(
        "event here",
        "test",
        tracing::Level::WARN,
        None,
        None,
        None,
        tracing::field::FieldSet::new(&[], tracing::callsite::Identifier(&CALLSITE)),
        tracing::metadata::Kind::EVENT,
    );
    impl tracing::Callsite for Site {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &tracing::Metadata<'_> {
            &META
        }
    }
    static CALLSITE: Site = Site;
}
