//! Polling with a deadline and a readable failure message.

use std::future::Future;
use std::time::Duration;

/// The outcome of one probe: done, or not yet with a description of the current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The condition holds.
    Done,
    /// The condition does not hold yet; the text describes what was observed.
    Pending(String),
}

impl From<bool> for Probe {
    fn from(done: bool) -> Self {
        if done {
            Probe::Done
        } else {
            Probe::Pending(String::new())
        }
    }
}

impl From<Result<(), String>> for Probe {
    fn from(r: Result<(), String>) -> Self {
        match r {
            Ok(()) => Probe::Done,
            Err(state) => Probe::Pending(state),
        }
    }
}

/// A condition that did not hold before its deadline.
#[derive(Debug, Clone, thiserror::Error)]
#[error("timed out after {timeout:?} waiting until {what}{}", describe(.state))]
pub struct WaitTimeout {
    /// What was waited for.
    pub what: String,
    /// How long.
    pub timeout: Duration,
    /// The last observed state, if the probe or caller described it.
    pub state: String,
}

fn describe(state: &str) -> String {
    if state.is_empty() {
        String::new()
    } else {
        format!("\nlast observed state:\n{state}")
    }
}

/// How often conditions are re-evaluated.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Polls `probe` until it reports done or `timeout` passes.
///
/// The probe returns `bool` or `Result<(), String>`; the error text of the last failed probe is
/// included in the timeout error.
pub async fn wait_until<F, Fut, P>(
    what: &str,
    timeout: Duration,
    mut probe: F,
) -> Result<(), WaitTimeout>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Into<Probe>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let state = match probe().await.into() {
            Probe::Done => return Ok(()),
            Probe::Pending(state) => state,
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(WaitTimeout {
                what: what.to_string(),
                timeout,
                state,
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
