//! A lost identity answer: which failures lose one, and when `provision` asks the server again.
//!
//! The server may have provisioned the gateway although its answer never arrived (a time-out, a
//! reset connection, a proxy that gave up). FCC's `pal/` may then hold a live identity, so
//! `provision` keeps it and asks again with the same request key: the server answers the stored
//! identity (200), or says the attempt still runs (409 `in_progress`) or that it cannot tell
//! (409 `in_doubt`). These decisions are plain functions of the error, tested here without a socket.

use std::time::Duration;

use crate::error::CliError;

/// How often and how patiently `provision` asks again after a lost answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// How many times to ask again (0: give up at once, keeping the staging directory).
    pub retries: u32,
    /// The wait before the first new try; each further wait doubles, up to `max_delay`.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The longest wait between two tries, whatever the first delay.
    pub const MAX_DELAY: Duration = Duration::from_secs(16);

    /// `retries` new tries, the first after `first_delay`, capped at [`Self::MAX_DELAY`].
    pub fn new(retries: u32, first_delay: Duration) -> Self {
        Self {
            retries,
            first_delay,
            max_delay: Self::MAX_DELAY.max(first_delay),
        }
    }

    /// The wait before new try number `n` (0 for the first): exponential, capped.
    pub fn delay(&self, n: u32) -> Duration {
        let factor = 1u32.checked_shl(n).unwrap_or(u32::MAX);
        self.first_delay
            .checked_mul(factor)
            .map_or(self.max_delay, |d| d.min(self.max_delay))
    }
}

/// Whether a failed identity request may have reached the server and lost its answer on the way
/// back. Only then can the gateway hold an identity the caller never saw; every other failure is
/// the server's own answer (or the request never left) and ends `provision` as before.
pub fn answer_lost(e: &CliError) -> bool {
    matches!(e, CliError::NoAnswer { .. } | CliError::Proxy { .. })
}

/// What to do after a new try (same serial, same request key) failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRetry {
    /// Wait and ask again (while tries are left): the server is still out of reach, or the first
    /// attempt still runs there.
    AskAgain,
    /// Stop: the server gave an answer asking again cannot change (e.g. 409 `in_doubt`, which an
    /// operator resolves), or one pep-cli cannot act on.
    Stop,
}

/// The decision after a failed new try.
pub fn after_retry(e: &CliError) -> AfterRetry {
    match e {
        CliError::NoAnswer { .. } | CliError::Proxy { .. } | CliError::Unreachable { .. } => {
            AfterRetry::AskAgain
        }
        // The first attempt is still injecting: its outcome will be stored under our key.
        CliError::Server {
            status: 409,
            state: Some(state),
            ..
        } if state == "in_progress" => AfterRetry::AskAgain,
        // 503 from the server itself: it cannot serve now (e.g. its store does not answer).
        CliError::Server { status: 503, .. } => AfterRetry::AskAgain,
        _ => AfterRetry::Stop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_answer() -> CliError {
        CliError::NoAnswer {
            url: "http://h:1".into(),
            detail: "connection closed before message completed".into(),
        }
    }

    fn unreachable() -> CliError {
        CliError::Unreachable {
            url: "http://h:1".into(),
            detail: "Connection refused".into(),
        }
    }

    fn proxy(status: u16) -> CliError {
        CliError::Proxy {
            what: "provision GW-1".into(),
            status,
            message: "<html>Bad Gateway</html>".into(),
        }
    }

    fn server(status: u16, state: Option<&str>) -> CliError {
        CliError::Server {
            what: "provision GW-1".into(),
            status,
            message: "no".into(),
            state: state.map(str::to_owned),
        }
    }

    #[test]
    fn only_answers_that_may_have_been_lost_start_a_recovery() {
        assert!(answer_lost(&no_answer()));
        for status in [502, 503, 504] {
            assert!(answer_lost(&proxy(status)), "{status}");
        }
        // Never sent: the server has nothing, nothing to recover.
        assert!(!answer_lost(&unreachable()));
        // The pep server's own answers are final, including its 502/504 about FCC.
        for status in [400, 401, 403, 404, 409, 422, 500, 502, 503, 504] {
            assert!(!answer_lost(&server(status, None)), "{status}");
        }
        assert!(!answer_lost(&CliError::Interrupted));
        assert!(!answer_lost(&CliError::BadAnswer {
            what: "x".into(),
            detail: "not JSON".into()
        }));
    }

    #[test]
    fn retries_go_on_while_the_server_is_away_or_busy_with_the_attempt() {
        assert_eq!(after_retry(&no_answer()), AfterRetry::AskAgain);
        assert_eq!(after_retry(&unreachable()), AfterRetry::AskAgain);
        assert_eq!(after_retry(&proxy(502)), AfterRetry::AskAgain);
        assert_eq!(after_retry(&proxy(504)), AfterRetry::AskAgain);
        assert_eq!(
            after_retry(&server(409, Some("in_progress"))),
            AfterRetry::AskAgain
        );
        assert_eq!(after_retry(&server(503, None)), AfterRetry::AskAgain);
    }

    #[test]
    fn retries_stop_on_answers_another_try_cannot_change() {
        assert_eq!(
            after_retry(&server(409, Some("in_doubt"))),
            AfterRetry::Stop
        );
        // Deployed under another key (or none), or a state this pep-cli does not know.
        assert_eq!(after_retry(&server(409, None)), AfterRetry::Stop);
        assert_eq!(
            after_retry(&server(409, Some("deployed"))),
            AfterRetry::Stop
        );
        // The key was used for another serial; bad request; token; unknown; internal error.
        for status in [400, 401, 403, 404, 422, 500] {
            assert_eq!(
                after_retry(&server(status, None)),
                AfterRetry::Stop,
                "{status}"
            );
        }
        // The server's own 502/504: it tried FCC again and failed.
        assert_eq!(after_retry(&server(502, None)), AfterRetry::Stop);
        assert_eq!(after_retry(&server(504, None)), AfterRetry::Stop);
        assert_eq!(
            after_retry(&CliError::BadAnswer {
                what: "x".into(),
                detail: "for serial GW-2".into()
            }),
            AfterRetry::Stop
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let p = RetryPolicy::new(6, Duration::from_millis(500));
        let delays: Vec<u64> = (0..6).map(|n| p.delay(n).as_millis() as u64).collect();
        assert_eq!(delays, vec![500, 1000, 2000, 4000, 8000, 16000]);
        assert_eq!(delays.iter().sum::<u64>(), 31_500, "about 30 s in all");
        assert_eq!(p.delay(7), RetryPolicy::MAX_DELAY);
        assert_eq!(p.delay(40), RetryPolicy::MAX_DELAY, "no overflow");
        assert_eq!(p.delay(u32::MAX), RetryPolicy::MAX_DELAY);
        // A first delay above the cap is kept as it is.
        let slow = RetryPolicy::new(2, Duration::from_secs(30));
        assert_eq!(slow.delay(0), Duration::from_secs(30));
        assert_eq!(slow.delay(3), Duration::from_secs(30));
        let zero = RetryPolicy::new(3, Duration::ZERO);
        assert_eq!(zero.delay(5), Duration::ZERO);
    }
}
