//! Secrets never reach a log: a whole run through the public API with every node and gateway
//! logging at debug level (sign-ups, a wrong password, sign-ins, refreshes, messages,
//! history, sync, a revoked device), then every process's log is searched for the passwords,
//! access and refresh tokens and message texts the run used, and for the password hashes the
//! nodes hold. None may appear.

use std::collections::BTreeSet;
use std::path::PathBuf;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

/// Debug for bongsu's own crates and the web stack; the libraries' own chatter stays at info.
const DEBUG: &str = "debug,h2=info,hyper=info,hyper_util=info,tower=info,rustls=info,tonic=info";

#[tokio::test(flavor = "multi_thread")]
async fn grpc_no_password_token_or_message_reaches_any_log() -> Result<()> {
    let env = Env::start(
        "grpc-secrets",
        Opts {
            log_filter: Some(DEBUG.into()),
            ..Opts::default()
        },
    )
    .await?;
    bounded(Duration::from_secs(120), async {
        let urls = env.grpc_urls();
        let mut secrets: BTreeSet<String> = BTreeSet::new();

        let mut hana = sign_up(&urls[0], "hana_secret").await?;
        let dami = sign_up(&urls[1], "dami_secret").await?;
        secrets.insert("hana_secret-secret-pw".into());
        secrets.insert("dami_secret-secret-pw".into());
        let (mut auth, _) = clients(&urls[2]).await?;
        let wrong = "a-wrong-password-for-hana";
        expect_code(
            auth.sign_in(v1::SignInRequest {
                handle: "hana_secret".into(),
                password: wrong.into(),
                device: device_info("thief"),
            })
            .await,
            "UNAUTHENTICATED",
            "a wrong password",
        )?;
        secrets.insert(wrong.into());
        let hana_laptop = sign_in(&urls[2], "hana_secret").await?;

        let conv = id(0x5e);
        hana.api
            .create_conversation(hana.req(v1::CreateConversationRequest {
                conv_id: conv.clone(),
                kind: v1::ConversationKind::Direct as i32,
                members: vec![dami.user()],
            }))
            .await?;
        for (n, from) in [&hana, &dami, &hana_laptop].into_iter().enumerate() {
            let body = format!("whisper-{n}-the-vault-code-is-{}", 4100 + n);
            from.api.clone().send(from.req(text(&conv, &body))).await?;
            secrets.insert(body);
        }
        dami.api
            .clone()
            .history(dami.req(v1::HistoryRequest {
                conv_id: conv.clone(),
                ..Default::default()
            }))
            .await?;
        dami.api
            .clone()
            .sync(dami.req(v1::SyncRequest::default()))
            .await?;

        // A refresh, a spent refresh token presented again, and a revoked device.
        let spent = hana.session.refresh_token.clone();
        let fresh = hana
            .auth
            .refresh(v1::RefreshRequest {
                refresh_token: spent.clone(),
            })
            .await?
            .into_inner();
        hana.auth
            .revoke_device(Request::new(v1::RevokeDeviceRequest {
                device_id: hana_laptop.session.device_id.clone(),
            }))
            .await
            .err()
            .context("revoking without a token must fail")?;
        let old_session = std::mem::replace(&mut hana.session, fresh);
        hana.auth
            .clone()
            .revoke_device(hana.req(v1::RevokeDeviceRequest {
                device_id: hana_laptop.session.device_id.clone(),
            }))
            .await?;
        for s in [
            &old_session,
            &hana.session,
            &dami.session,
            &hana_laptop.session,
        ] {
            secrets.insert(s.access_token.clone());
            // The signature alone, too: a log that cut the token would still give it away.
            secrets.insert(s.access_token.rsplit('.').nth(1).unwrap_or("").to_string());
            secrets.insert(s.refresh_token.clone());
            secrets.insert(s.refresh_token.rsplit('.').next().unwrap_or("").to_string());
        }
        secrets.retain(|s| s.len() >= 12);

        let mut logs: Vec<PathBuf> = env.gateways.iter().map(|g| g.log.clone()).collect();
        logs.extend(
            env.cluster
                .ids()
                .into_iter()
                .map(|i| env.cluster.node(i).log_path()),
        );
        let mut all = String::new();
        for path in &logs {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read {}", path.display()))?;
            for s in &secrets {
                ensure!(
                    !text.contains(s.as_str()),
                    "{} contains a secret of {} characters starting {:?}",
                    path.display(),
                    s.len(),
                    &s[..4]
                );
            }
            // No password hash either (an argon2id PHC string names itself).
            ensure!(
                !text.contains("$argon2id$"),
                "{} contains a password hash",
                path.display()
            );
            all.push_str(&text);
        }
        // The search saw real logs: debug lines of every process, sign-ins among them.
        ensure!(
            all.len() > 20_000,
            "only {} bytes of logs: was debug logging on?",
            all.len()
        );
        ensure!(
            all.contains("device signed in") && all.contains("DEBUG"),
            "the logs do not show the run"
        );
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}
