//! Fault injection for tests and load runs: each fault has a probability, all draws come from one
//! seeded generator so a run can be repeated.
//!
//! Command-line form: `KIND[=ARG][:PROBABILITY]`, probability in `0..=1` (default 1):
//!
//! | Spec | Effect |
//! |---|---|
//! | `close` | process the message (items are stored) but close without replying |
//! | `corrupt-hash` | reply with a wrong SHA-256 in the response frame |
//! | `stall=MS` | wait MS milliseconds before replying |
//! | `wire9` | reply with the 12-byte wire-status-9 frame instead of the response |
//! | `return-status=N` | reply with ReturnStatus N (and its InfoMessage prefix) instead of the real one |
//! | `never-read` | accept a connection, then never read from it |
//! | `refused` | the fleet (`pep-fleet`) only: the gateway is never started, so connecting to it is refused (a single `fake-fcc` ignores it) |

use std::str::FromStr;
use std::time::Duration;

use fcc_proto::status::FccStatus;
use rand::{Rng, SeedableRng, rngs::StdRng};

use crate::FakeFccError;

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Close the connection without replying (after processing).
    CloseWithoutReply,
    /// Send the response with a corrupted hash.
    CorruptHash,
    /// Wait before replying.
    Stall(Duration),
    /// Answer the 12-byte wire-status-9 frame.
    WireStatus9,
    /// Answer this `ReturnStatus` instead of the real one.
    ReturnStatus(FccStatus),
    /// Accept a connection and never read from it.
    AcceptThenNeverRead,
    /// The gateway is not running: nothing listens at its port, connections are refused. Only a
    /// fleet can do this (it does not start the gateway); a running gateway ignores it.
    Refused,
}

impl std::fmt::Display for FaultKind {
    /// The short name of the command-line spec (`close`, `stall=2000`, `return-status=17`, …),
    /// which parses back to the same kind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FaultKind::CloseWithoutReply => f.write_str("close"),
            FaultKind::CorruptHash => f.write_str("corrupt-hash"),
            FaultKind::Stall(d) => write!(f, "stall={}", d.as_millis()),
            FaultKind::WireStatus9 => f.write_str("wire9"),
            FaultKind::ReturnStatus(s) => write!(f, "return-status={}", s.as_u32()),
            FaultKind::AcceptThenNeverRead => f.write_str("never-read"),
            FaultKind::Refused => f.write_str("refused"),
        }
    }
}

/// A fault and how often it fires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What happens.
    pub kind: FaultKind,
    /// Probability per opportunity (per message, or per connection for `AcceptThenNeverRead`).
    pub probability: f64,
}

impl FromStr for Fault {
    type Err = FakeFccError;

    fn from_str(spec: &str) -> Result<Fault, FakeFccError> {
        let err = |reason: &str| FakeFccError::FaultSpec {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let (body, probability) = match spec.rsplit_once(':') {
            Some((body, p)) => {
                let p: f64 = p
                    .trim()
                    .parse()
                    .map_err(|_| err("the probability is not a number"))?;
                (body, p)
            }
            None => (spec, 1.0),
        };
        if !(0.0..=1.0).contains(&probability) {
            return Err(err("the probability must be between 0 and 1"));
        }
        let (name, arg) = match body.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (body.trim(), None),
        };
        let need_arg = || arg.ok_or_else(|| err("this fault needs a value (KIND=VALUE)"));
        let no_arg = |kind: FaultKind| {
            if arg.is_some() {
                Err(err("this fault takes no value"))
            } else {
                Ok(kind)
            }
        };
        let kind = match name {
            "close" => no_arg(FaultKind::CloseWithoutReply)?,
            "corrupt-hash" | "hash" => no_arg(FaultKind::CorruptHash)?,
            "stall" => {
                let ms: u64 = need_arg()?
                    .parse()
                    .map_err(|_| err("the stall must be a number of milliseconds"))?;
                FaultKind::Stall(Duration::from_millis(ms))
            }
            "wire9" | "status9" => no_arg(FaultKind::WireStatus9)?,
            "return-status" | "status" => {
                let n: u32 = need_arg()?
                    .parse()
                    .map_err(|_| err("the return status must be a number"))?;
                FaultKind::ReturnStatus(FccStatus::from_u32(n))
            }
            "never-read" => no_arg(FaultKind::AcceptThenNeverRead)?,
            "refused" => no_arg(FaultKind::Refused)?,
            _ => {
                return Err(err(
                    "unknown fault; use close, corrupt-hash, stall=MS, wire9, return-status=N, never-read or refused",
                ));
            }
        };
        Ok(Fault { kind, probability })
    }
}

/// The faults of a gateway and the seed of their generator.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// The configured faults, drawn in this order.
    pub faults: Vec<Fault>,
    /// Seed of the generator (`None` = seeded from the OS).
    pub seed: Option<u64>,
}

impl Faults {
    /// No faults.
    pub fn none() -> Faults {
        Faults::default()
    }

    /// Whether any fault is configured.
    pub fn is_empty(&self) -> bool {
        self.faults.is_empty()
    }

    /// The generator that draws these faults.
    pub fn roller(&self) -> FaultRoller {
        let rng = match self.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        FaultRoller {
            faults: self.faults.clone(),
            rng,
        }
    }
}

/// Draws faults for each opportunity.
#[derive(Debug)]
pub struct FaultRoller {
    faults: Vec<Fault>,
    rng: StdRng,
}

impl FaultRoller {
    fn fires(&mut self, probability: f64) -> bool {
        probability >= 1.0 || (probability > 0.0 && self.rng.gen_bool(probability))
    }

    /// Whether a new connection is to be accepted and never read.
    pub fn on_accept(&mut self) -> bool {
        let candidates: Vec<f64> = self
            .faults
            .iter()
            .filter(|f| f.kind == FaultKind::AcceptThenNeverRead)
            .map(|f| f.probability)
            .collect();
        candidates.into_iter().any(|p| self.fires(p))
    }

    /// The message faults that fire for one processed message, in configuration order.
    pub fn on_message(&mut self) -> Vec<FaultKind> {
        let candidates: Vec<Fault> = self
            .faults
            .iter()
            .filter(|f| !matches!(f.kind, FaultKind::AcceptThenNeverRead | FaultKind::Refused))
            .copied()
            .collect();
        candidates
            .into_iter()
            .filter(|f| self.fires(f.probability))
            .map(|f| f.kind)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "close:0.1".parse::<Fault>().unwrap(),
            Fault {
                kind: FaultKind::CloseWithoutReply,
                probability: 0.1
            }
        );
        assert_eq!(
            "stall=2000:0.05".parse::<Fault>().unwrap().kind,
            FaultKind::Stall(Duration::from_millis(2000))
        );
        assert_eq!("wire9".parse::<Fault>().unwrap().probability, 1.0);
        assert_eq!("refused".parse::<Fault>().unwrap().kind, FaultKind::Refused);
        assert_eq!(
            "return-status=17".parse::<Fault>().unwrap().kind,
            FaultKind::ReturnStatus(FccStatus::KcmFileExistError)
        );
        for bad in [
            "close:2",
            "stall",
            "close=1",
            "bogus",
            "close:x",
            "stall=abc",
        ] {
            let e = bad.parse::<Fault>().unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn kinds_display_as_their_spec_and_parse_back() {
        for (kind, name) in [
            (FaultKind::CloseWithoutReply, "close"),
            (FaultKind::CorruptHash, "corrupt-hash"),
            (FaultKind::Stall(Duration::from_millis(2000)), "stall=2000"),
            (FaultKind::WireStatus9, "wire9"),
            (
                FaultKind::ReturnStatus(FccStatus::KcmFileExistError),
                "return-status=17",
            ),
            (FaultKind::AcceptThenNeverRead, "never-read"),
            (FaultKind::Refused, "refused"),
        ] {
            assert_eq!(kind.to_string(), name);
            assert_eq!(name.parse::<Fault>().unwrap().kind, kind);
        }
    }

    #[test]
    fn seeded_rolls_repeat() {
        let faults = Faults {
            faults: vec!["close:0.5".parse().unwrap()],
            seed: Some(7),
        };
        let a: Vec<_> = (0..32)
            .map(|_| faults.roller().on_message().len())
            .collect();
        let mut r1 = faults.roller();
        let mut r2 = faults.roller();
        let s1: Vec<_> = (0..32).map(|_| r1.on_message().len()).collect();
        let s2: Vec<_> = (0..32).map(|_| r2.on_message().len()).collect();
        assert_eq!(s1, s2);
        assert!(s1.contains(&0) && s1.contains(&1));
        assert_eq!(a.len(), 32);
    }
}
