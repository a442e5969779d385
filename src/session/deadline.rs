//! Deadlines of a network connection: `initialize` soon after connecting, no
//! idling before authentication, frames that keep arriving, and a keep-alive
//! period after which a silent connection is closed.
//!
//! They read only a connection's `Activity` and its state, so that every
//! network transport gets them by handing the session a `Deadlines`.

use std::time::Duration;

use crate::config::NetworkConfig;
use openwork_proto::transport::Activity;

/// How long a network connection may take over each thing.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From connecting to a successful `initialize`, before authentication
    /// (not counting while a call is in progress: pairing waits for the owner).
    pub initialize: Duration,
    /// Without a byte and with no call in progress, before authentication.
    pub unauthenticated_idle: Duration,
    /// A frame: its whole before authentication, between its bytes after.
    pub frame: Duration,
    /// Nothing read and nothing written, after authentication, with no call in progress.
    pub keepalive: Duration,
}

impl Deadlines {
    pub(crate) fn from_config(network: &NetworkConfig) -> Deadlines {
        Deadlines {
            initialize: Duration::from_millis(network.initialize_timeout_ms),
            unauthenticated_idle: Duration::from_millis(network.unauthenticated_idle_ms),
            frame: Duration::from_millis(network.frame_timeout_ms),
            keepalive: Duration::from_secs(network.keepalive_timeout_s),
        }
    }
}

/// What a connection is doing, as far as its deadlines care.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Standing {
    pub authenticated: bool,
    /// `initialize` succeeded.
    pub initialized: bool,
    /// A call is in progress.
    pub busy: bool,
}

/// The longest a check's verdict is trusted: the standing may change.
const RECHECK: Duration = Duration::from_secs(1);

/// Whether a deadline passed (why, in words) or when to look again.
pub(crate) fn check(
    deadlines: &Deadlines,
    activity: &Activity,
    standing: Standing,
) -> Result<Duration, String> {
    let mut next = RECHECK;
    let mut within = |limit: Duration, spent: Duration, why: &dyn Fn() -> String| match limit
        .checked_sub(spent)
    {
        Some(left) if !left.is_zero() => {
            next = next.min(left);
            Ok(())
        }
        _ => Err(why()),
    };
    let secs = |d: Duration| format!("{:.1} s", d.as_secs_f64());
    // A call in progress (pairing's wait for the owner's approval, which
    // comes before any `initialize`) stops the clock.
    if !standing.authenticated && !standing.initialized && !standing.busy {
        within(deadlines.initialize, activity.age(), &|| {
            format!(
                "no successful `initialize` within {} of connecting (network.initialize_timeout_ms)",
                secs(deadlines.initialize)
            )
        })?;
    }
    if let Some(elapsed) = activity.frame_elapsed() {
        if standing.authenticated {
            within(deadlines.frame, activity.since_read(), &|| {
                format!(
                    "a frame stopped arriving: nothing of it for {} (network.frame_timeout_ms)",
                    secs(deadlines.frame)
                )
            })?;
        } else {
            within(deadlines.frame, elapsed, &|| {
                format!(
                    "a frame did not arrive whole within {} (network.frame_timeout_ms)",
                    secs(deadlines.frame)
                )
            })?;
        }
    }
    if !standing.busy {
        if standing.authenticated {
            let silent = activity.since_read().min(activity.since_write());
            within(deadlines.keepalive, silent, &|| {
                format!(
                    "nothing read or written for {} (network.keepalive_timeout_s)",
                    secs(deadlines.keepalive)
                )
            })?;
        } else {
            within(
                deadlines.unauthenticated_idle,
                activity.since_read(),
                &|| {
                    format!(
                        "idle for {} before authenticating (network.unauthenticated_idle_ms)",
                        secs(deadlines.unauthenticated_idle)
                    )
                },
            )?;
        }
    }
    Ok(next.max(Duration::from_millis(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short() -> Deadlines {
        Deadlines {
            initialize: Duration::from_millis(40),
            unauthenticated_idle: Duration::from_secs(60),
            frame: Duration::from_secs(60),
            keepalive: Duration::from_secs(60),
        }
    }

    #[test]
    fn an_unauthenticated_connection_must_initialize_in_time() {
        let activity = Activity::new();
        let standing = Standing {
            authenticated: false,
            initialized: false,
            busy: false,
        };
        assert!(check(&short(), &activity, standing).is_ok());
        std::thread::sleep(Duration::from_millis(50));
        let why = check(&short(), &activity, standing).unwrap_err();
        assert!(why.contains("initialize_timeout_ms"), "{why}");
        let initialized = Standing {
            initialized: true,
            ..standing
        };
        assert!(check(&short(), &activity, initialized).is_ok());
    }

    #[test]
    fn a_half_read_frame_must_keep_arriving() {
        let mut deadlines = short();
        deadlines.frame = Duration::from_millis(30);
        let activity = Activity::new();
        let standing = Standing {
            authenticated: true,
            initialized: true,
            busy: false,
        };
        activity.read();
        activity.begin_frame();
        std::thread::sleep(Duration::from_millis(40));
        let why = check(&deadlines, &activity, standing).unwrap_err();
        assert!(why.contains("stopped arriving"), "{why}");
        activity.end_frame();
        assert!(check(&deadlines, &activity, standing).is_ok());
    }
}
