//! The CA's certificate revocation list as the server publishes it (`GET /v3/crl`): which
//! certificates it lists and its number come from the store, the signature from `pep-ca`
//! ([`pep_ca::FactoryCa::sign_crl`]).
//!
//! A signed CRL is kept and served again until the revoked set changes (every request reads the
//! set, which also sees revocations made by other servers of a shared database) or half of its
//! validity (`[crl] validity_hours`) has passed, so relying parties never fetch one about to
//! expire. Each new CRL takes the next number from the store ([`Store::next_crl_number`]): it
//! grows across restarts and across servers.

use std::sync::Arc;
use std::time::Duration;

use pep_ca::{CaError, CrlContent, FactoryCa, RevokedEntry};
use time::OffsetDateTime;

use crate::store::{RevokedCertificate, Store, StoreError};

/// Why no CRL could be served.
#[derive(Debug, thiserror::Error)]
pub enum CrlError {
    /// Reading the revoked set or taking a number failed.
    #[error("the store failed: {0}")]
    Store(#[from] StoreError),
    /// The CA could not sign (a token that is away: [`CaError::is_unavailable`]).
    #[error("the CA could not sign the CRL: {0}")]
    Ca(#[from] CaError),
    /// A stored revocation time is outside what a CRL can hold.
    #[error("revocation time {0} ms is out of range")]
    Time(i64),
}

/// A signed CRL.
#[derive(Debug)]
pub struct SignedCrl {
    /// The CRL, DER.
    pub der: Vec<u8>,
    /// Its cRLNumber.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// The revoked set it lists (compared with the store's to know when to re-sign).
    revoked: Vec<RevokedCertificate>,
}

/// The latest CRL signed by this server and when to sign the next.
#[derive(Debug)]
pub struct CrlCache {
    validity: Duration,
    /// Held while signing: concurrent requests wait for one new CRL instead of each taking a
    /// number.
    latest: tokio::sync::Mutex<Option<Arc<SignedCrl>>>,
}

impl CrlCache {
    /// A cache signing CRLs valid for `validity` (`[crl] validity_hours`).
    pub fn new(validity: Duration) -> CrlCache {
        CrlCache {
            validity,
            latest: tokio::sync::Mutex::new(None),
        }
    }

    /// The current CRL at `now`: the kept one while it lists exactly the store's revoked set and
    /// less than half its validity has passed; else a new one, with the next number.
    pub async fn current(
        &self,
        store: &Store,
        ca: &Arc<FactoryCa>,
        now: OffsetDateTime,
    ) -> Result<Arc<SignedCrl>, CrlError> {
        let mut latest = self.latest.lock().await;
        let revoked = store.revoked_certificates().await?;
        if let Some(crl) = latest.as_ref()
            && crl.revoked == revoked
            && now >= crl.this_update
            && now < crl.this_update + self.validity / 2
        {
            return Ok(Arc::clone(crl));
        }
        let entries = revoked
            .iter()
            .map(|r| {
                let at =
                    OffsetDateTime::from_unix_timestamp_nanos(i128::from(r.revoked_at) * 1_000_000)
                        .map_err(|_| CrlError::Time(r.revoked_at))?;
                Ok(RevokedEntry {
                    serial_hex: r.cert_serial.clone(),
                    revoked_at: at,
                    reason: r.reason(),
                })
            })
            .collect::<Result<Vec<_>, CrlError>>()?;
        let this_update = now.replace_nanosecond(0).unwrap_or(now);
        let next_update = this_update + self.validity;
        let number = store.next_crl_number().await?;
        let sign = {
            let ca = Arc::clone(ca);
            move || {
                ca.sign_crl(&CrlContent {
                    number,
                    this_update,
                    next_update,
                    revoked: &entries,
                })
            }
        };
        // A key in a token signs on a blocking thread, as certificates do (provision.rs).
        let der = if ca.key_in_token() {
            tokio::task::spawn_blocking(sign)
                .await
                .map_err(|_| CaError::Crypto {
                    operation: "signing the CRL on a blocking thread (the thread failed)",
                })??
        } else {
            sign()?
        };
        tracing::info!(
            crl_number = number,
            revoked = revoked.len(),
            next_update = %next_update,
            "CRL signed"
        );
        let crl = Arc::new(SignedCrl {
            der,
            number,
            this_update,
            next_update,
            revoked,
        });
        *latest = Some(Arc::clone(&crl));
        Ok(crl)
    }
}
