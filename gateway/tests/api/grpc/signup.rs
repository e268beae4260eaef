//! Sign-ups that die halfway: a handle claimed for a user id that never gets an account, and
//! accounts whose claim was never confirmed.
//!
//! The crash is simulated by writing the first steps of a sign-up straight to the nodes'
//! internal API, as a gateway that then died would have. Taking over an abandoned claim needs
//! its grace period (ten minutes, a constant of the nodes) to pass, so that branch is covered by
//! the unit tests of `bongsu-raft-store`; here: a claim within the grace period is respected,
//! a confirmed claim is never taken, and a lost confirmation is repaired by the next sign-in or
//! by the next sign-up that wants the handle.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use argon2::password_hash::{PasswordHasher, SaltString};
use argon2::Argon2;
use bongsu_proto::internal::node_api_client::NodeApiClient;
use bongsu_proto::internal::{
    write_request, ClaimHandle, CreateAccount, ResolveHandleReply, ResolveHandleRequest,
    WriteReply, WriteRequest,
};
use bongsu_proto::v1;
use tonic::transport::Channel;
use tonic::Status;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

#[tokio::test(flavor = "multi_thread")]
async fn grpc_signup_survives_a_sign_up_that_died() -> Result<()> {
    let env = Env::start("grpc-signup", Opts::default()).await?;
    bounded(Duration::from_secs(120), async {
        let urls = env.grpc_urls();
        let nodes = Nodes::connect(&env).await?;

        // A sign-up died right after its claim: the user id never gets an account.
        let ghost = id(0x61);
        nodes.write(claim("Ghost", &ghost)).await?.map_err(failed)?;
        let (mut auth, _) = clients(&urls[0]).await?;
        expect_code(
            auth.sign_up(signup_req("ghost")).await,
            "HANDLE_TAKEN",
            "sign up with a handle claimed moments ago",
        )?;
        let held = nodes.resolve("ghost").await?;
        ensure!(
            held.user_id == ghost && !held.confirmed,
            "a refused sign-up changes nothing: {held:?}"
        );
        expect_code(
            auth.sign_in(signin_req("ghost")).await,
            "UNAUTHENTICATED",
            "sign in to a claim without an account",
        )?;

        // A whole sign-up confirms its claim, and a confirmed claim is never taken.
        let minji = sign_up(&urls[1], "minji").await?;
        let held = nodes.resolve("minji").await?;
        ensure!(
            held.user_id == minji.user() && held.confirmed,
            "sign-up confirms: {held:?}"
        );
        expect_code(
            auth.sign_up(signup_req("MINJI")).await,
            "HANDLE_TAKEN",
            "sign up with a confirmed handle",
        )?;
        expect_code(
            nodes.write(claim("minji", &id(0x62))).await?,
            "HANDLE_TAKEN",
            "a claim by another user id straight to the nodes",
        )?;
        ensure!(nodes.resolve("minji").await? == held, "nothing changed");

        // Looking people up finds confirmed handles only: a dead sign-up's claim is nobody.
        let found = minji
            .api
            .clone()
            .lookup_users(minji.req(v1::LookupUsersRequest {
                handles: vec!["ghost".into(), "minji".into()],
                user_ids: Vec::new(),
            }))
            .await
            .map_err(failed)?
            .into_inner()
            .users;
        ensure!(
            found.len() == 1 && found[0].handle == "minji" && found[0].user_id == minji.user(),
            "lookup returns only the confirmed handle: {found:?}"
        );

        // A sign-up died after creating the account: the next sign-in confirms the claim.
        let jisoo = dead_after_account(&nodes, "jisoo").await?;
        let signed_in = sign_in(&urls[2], "jisoo").await?;
        ensure!(signed_in.user() == jisoo, "the account of the claim");
        let held = nodes.resolve("jisoo").await?;
        ensure!(
            held.user_id == jisoo && held.confirmed,
            "sign-in confirms: {held:?}"
        );

        // The same, but the next one to come is a sign-up for the same handle: it finds the
        // account, confirms the claim for its owner and is refused.
        let hana = dead_after_account(&nodes, "hana").await?;
        expect_code(
            auth.sign_up(signup_req("hana")).await,
            "HANDLE_TAKEN",
            "sign up with a handle whose account was never confirmed",
        )?;
        let held = nodes.resolve("hana").await?;
        ensure!(
            held.user_id == hana && held.confirmed,
            "the sign-up confirmed the old owner: {held:?}"
        );
        let signed_in = sign_in(&urls[0], "hana").await?;
        ensure!(signed_in.user() == hana, "the old owner signs in");
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}

/// The password `sign_up`/`sign_in` of the parent module use for a handle.
fn password(handle: &str) -> String {
    format!("{handle}-secret-pw")
}

fn signup_req(handle: &str) -> v1::SignUpRequest {
    v1::SignUpRequest {
        handle: handle.to_string(),
        password: "another-password".into(),
        device: device_info("x"),
    }
}

fn signin_req(handle: &str) -> v1::SignInRequest {
    v1::SignInRequest {
        handle: handle.to_string(),
        password: password(handle),
        device: device_info("x"),
    }
}

fn claim(handle: &str, user: &[u8]) -> write_request::Command {
    write_request::Command::ClaimHandle(ClaimHandle {
        handle: handle.to_string(),
        user_id: user.to_vec(),
    })
}

fn failed(s: Status) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", code(&s), s.message())
}

/// The first two steps of a sign-up for `handle` (claim, account with the handle's test
/// password), then nothing: the gateway died before confirming.
async fn dead_after_account(nodes: &Nodes, handle: &str) -> Result<Vec<u8>> {
    let user = id(0x63);
    nodes.write(claim(handle, &user)).await?.map_err(failed)?;
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(anyhow::Error::msg)?;
    let hash = Argon2::default()
        .hash_password(password(handle).as_bytes(), &salt)
        .map_err(anyhow::Error::msg)?
        .to_string();
    nodes
        .write(write_request::Command::CreateAccount(CreateAccount {
            user_id: user.clone(),
            handle: handle.to_string(),
            password_hash: hash,
        }))
        .await?
        .map_err(failed)?;
    let held = nodes.resolve(handle).await?;
    ensure!(
        held.user_id == user && !held.confirmed,
        "claimed, not confirmed: {held:?}"
    );
    Ok(user)
}

/// The nodes' internal API, as a gateway reaches it: every node is tried until the shard's
/// leader answers.
struct Nodes {
    clients: Vec<NodeApiClient<Channel>>,
}

/// Codes on which another node (or the same one later) may answer.
fn try_elsewhere(s: &Status) -> bool {
    matches!(code(s).as_str(), "NOT_LEADER" | "UNAVAILABLE" | "<none>")
}

impl Nodes {
    async fn connect(env: &Env) -> Result<Nodes> {
        let mut clients = Vec::new();
        for (_, addr) in env.cluster.api_addrs() {
            clients.push(
                bongsu_testkit::chat::node_api(&addr)
                    .with_context(|| format!("connect to node {addr}"))?,
            );
        }
        ensure!(!clients.is_empty(), "no node");
        Ok(Nodes { clients })
    }

    /// The shard leader's answer to a write: `Ok(Err(status))` when it refused it.
    async fn write(
        &self,
        cmd: write_request::Command,
    ) -> Result<std::result::Result<WriteReply, Status>> {
        let req = WriteRequest { command: Some(cmd) };
        self.leader("write", |mut c| {
            let req = req.clone();
            async move { c.write(req).await }
        })
        .await
    }

    async fn resolve(&self, handle: &str) -> Result<ResolveHandleReply> {
        let req = ResolveHandleRequest {
            handle: handle.to_string(),
        };
        self.leader("resolve a handle", |mut c| {
            let req = req.clone();
            async move { c.resolve_handle(req).await }
        })
        .await?
        .map_err(failed)
    }

    async fn leader<T, F, Fut>(&self, what: &str, op: F) -> Result<std::result::Result<T, Status>>
    where
        F: Fn(NodeApiClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<tonic::Response<T>, Status>>,
    {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut last = None;
            for c in &self.clients {
                match op(c.clone()).await {
                    Ok(r) => return Ok(Ok(r.into_inner())),
                    Err(s) if try_elsewhere(&s) => last = Some(s),
                    Err(s) => return Ok(Err(s)),
                }
            }
            if Instant::now() > deadline {
                bail!("{what}: no leader answered within 20 s; last {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
