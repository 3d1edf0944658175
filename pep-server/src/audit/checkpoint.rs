//! Signed checkpoints of the audit chains: the head of each chain this server writes (its row id,
//! position = row count, hash) and the time, signed by the factory CA key (a PKCS#11 token works
//! the same), stored in `audit_checkpoints` and logged. A chain cut off below a checkpoint no
//! longer has the row the CA signed, which `audit verify` reports. Made at start, every
//! `[audit] checkpoint_interval_s`, and at shutdown; a head that did not move since the chain's
//! last checkpoint is not signed again.

use std::sync::Arc;
use std::time::Duration;

use pep_ca::{CaError, FactoryCa};

use crate::store::chain::{self, CheckpointFields};
use crate::store::{Checkpoint, Store, StoreError, now_ms};

/// Why a checkpoint was not made.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// Reading the head or storing the checkpoint failed.
    #[error("audit checkpoint: {0}")]
    Store(#[from] StoreError),
    /// The CA key did not sign (its token is away, ...).
    #[error("audit checkpoint: signing with the CA key failed: {0}")]
    Sign(#[from] CaError),
    /// The signing thread died.
    #[error("audit checkpoint: the signing task failed: {0}")]
    Task(String),
}

/// Signs and stores the head of every chain this server checkpoints whose head moved since its
/// last checkpoint. Returns the checkpoints made.
pub async fn checkpoint(
    store: &Store,
    ca: &Arc<FactoryCa>,
) -> Result<Vec<Checkpoint>, CheckpointError> {
    let mut made = Vec::new();
    for (server_id, head) in store.chain_heads().await? {
        if head.seq == 0 || store.last_checkpoint_seq(&server_id).await? == Some(head.seq) {
            continue;
        }
        let at_ms = now_ms();
        let message = chain::checkpoint_message(&CheckpointFields {
            server_id: &server_id,
            seq: head.seq,
            audit_id: head.id,
            hash: &head.hash,
            at_ms,
        });
        let signature = if ca.key_in_token() {
            // A call into the token's module may block.
            let ca = Arc::clone(ca);
            tokio::task::spawn_blocking(move || ca.sign(&message))
                .await
                .map_err(|e| CheckpointError::Task(e.to_string()))??
        } else {
            ca.sign(&message)?
        };
        let c = Checkpoint {
            id: 0,
            server_id,
            seq: head.seq,
            audit_id: head.id,
            hash: head.hash.to_vec(),
            at_ms,
            signature,
        };
        store.insert_checkpoint(&c).await?;
        tracing::info!(
            chain = %c.server_id,
            seq = c.seq,
            audit_id = c.audit_id,
            hash = %hex::encode(&c.hash),
            at_ms = c.at_ms,
            signature = %hex::encode(&c.signature),
            "audit checkpoint signed"
        );
        made.push(c);
    }
    Ok(made)
}

/// Makes a checkpoint every `every` (the first one `every` from now), until the task is aborted.
/// A failure is logged and retried at the next tick.
pub async fn run(store: Store, ca: Arc<FactoryCa>, every: Duration) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(e) = checkpoint(&store, &ca).await {
            tracing::warn!(error = %e, "audit checkpoint failed; retrying at the next interval");
        }
    }
}
