//! Token-signing keys: the meta group's leader makes sure one exists.
//!
//! Gateways sign and verify access tokens with Ed25519 keys kept in the meta group, which has
//! voters in three datacenters, so signing in never depends on one service or building
//! (ARCHITECTURE.md invariant 2). After init, whichever node leads the meta group adds a key when
//! none is active. It checks the meta state after a linearizable read first, so a new leader
//! that has not applied its predecessor's key yet does not add a second one; should two
//! still race, both keys are valid and verify tokens alike.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bongsu_raft_store::meta::{MetaCommand, MetaSnapshot, SigningKey, META_GROUP};
use rand::TryRngCore;

use crate::errors::{NodeError, Result};
use crate::node::Node;

/// How often the meta leader looks again without a meta change (leadership moves do not
/// change the meta state).
const RECHECK: Duration = Duration::from_secs(2);

pub fn spawn(node: Arc<Node>) {
    tokio::spawn(run(node));
}

fn has_active_key(meta: &MetaSnapshot) -> bool {
    meta.signing_keys.iter().any(|k| k.retired_at_ms.is_none())
}

async fn run(node: Arc<Node>) {
    let mut meta = node.watch_meta();
    loop {
        tokio::select! {
            r = meta.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RECHECK) => {}
        }
        if let Err(e) = ensure_key(&node).await {
            tracing::warn!(error = %e, "could not add a signing key; will retry");
        }
    }
}

/// Adds a signing key if this node leads an initialized meta group that has no active key.
pub async fn ensure_key(node: &Node) -> Result<()> {
    let cheap = node.meta();
    if cheap.config.is_none() || has_active_key(&cheap) || node.leading(META_GROUP).is_err() {
        return Ok(());
    }
    node.linearizable(META_GROUP).await?;
    node.refresh_meta()?;
    if has_active_key(&node.meta()) {
        return Ok(());
    }
    let key = generate()?;
    let kid = key.kid.clone();
    node.propose_meta(MetaCommand::AddSigningKey(key)).await?;
    tracing::info!(%kid, "added a token-signing key");
    Ok(())
}

/// A fresh Ed25519 key: a 32-byte seed from the operating system's CSPRNG and a random key id.
pub fn generate() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    let mut id = [0u8; 8];
    let mut os = rand::rngs::OsRng;
    os.try_fill_bytes(&mut seed)
        .and_then(|()| os.try_fill_bytes(&mut id))
        .map_err(|e| NodeError::Unavailable(format!("operating system randomness: {e}")))?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    let created_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Ok(SigningKey {
        kid: id.iter().map(|b| format!("{b:02x}")).collect(),
        seed,
        public,
        created_at_ms,
        retired_at_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, Verifier};

    #[test]
    fn generated_keys_sign_and_verify_and_differ() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.seed, b.seed);
        assert_ne!(a.kid, b.kid);
        assert_eq!(a.kid.len(), 16);
        let sk = ed25519_dalek::SigningKey::from_bytes(&a.seed);
        let sig = sk.sign(b"token");
        let vk = ed25519_dalek::VerifyingKey::from_bytes(&a.public).unwrap();
        assert!(vk.verify(b"token", &sig).is_ok());
        assert!(vk.verify(b"other", &sig).is_err());
    }
}
