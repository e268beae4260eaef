//! Rate limits (429 `RESOURCE_EXHAUSTED` with `Retry-After`) and expired access tokens.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use reqwest::Method;
use serde_json::json;

use super::client::*;
use crate::harness::Env;

pub(super) async fn rate_limits(env: &Env) -> Result<()> {
    let urls = env.http_urls();
    let (g1, g2) = (Api::new(&urls[0]), Api::new(&urls[1]));
    // Auth attempts on gw1: 1 (sign-up), 2 (a wrong password), 3 (sign-up), 4 is refused.
    let hu = handle("user");
    let u = g1.signup(&hu, "phone").await?;
    let wrong = json!({"handle": hu, "password": "wrong", "device": {"kind": "web", "name": "w"}});
    g1.fails(
        Method::POST,
        "/v1/auth/signin",
        None,
        Some(wrong),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    let v = g1.signup(&handle("vera"), "pc").await?;
    let late = handle("late");
    let body = json!({"handle": late, "password": "long-enough-1", "device": {"kind": "web", "name": "w"}});
    let r = g1
        .fails(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(body),
            429,
            "RESOURCE_EXHAUSTED",
        )
        .await?;
    ensure!(
        r.retry_after.is_some_and(|s| (1..=60).contains(&s)),
        "Retry-After: {:?}",
        r.retry_after
    );
    let r = g1
        .fails(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": u.refresh})),
            429,
            "RESOURCE_EXHAUSTED",
        )
        .await?;
    ensure!(r.retry_after.is_some(), "Retry-After on refresh");
    // The refused sign-up made no account (asked on another gateway, whose limits are its own).
    let found = g2
        .ok(
            Method::POST,
            "/v1/users/lookup",
            Some(&v.token),
            Some(json!({"handles": [late, hu]})),
        )
        .await?;
    ensure!(
        found["users"]
            .as_array()
            .is_some_and(|u| u.len() == 1 && u[0]["handle"] == hu),
        "{found}"
    );

    // Per user: 2/s with bursts of 4. Wait for a full allowance, then send 8 at once.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let conv = new_id();
    g1.ok(
        Method::POST,
        "/v1/conversations",
        Some(&u.token),
        Some(json!({"conv_id": conv, "kind": "group", "members": []})),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let path = format!("/v1/conversations/{conv}/messages");
    let sends = (0..8).map(|i| {
        let (g1, path, token) = (g1.clone(), path.clone(), u.token.clone());
        async move {
            let id = new_id();
            let body = json!({"client_msg_id": id, "kind": "text", "text": format!("burst {i}")});
            g1.call(Method::POST, &path, Some(&token), Some(body))
                .await
                .map(|r| (id, r))
        }
    });
    let replies = futures::future::try_join_all(sends).await?;
    let mut stored = Vec::new();
    let mut limited = 0;
    for (id, r) in &replies {
        match r.status {
            200 => stored.push(id.clone()),
            429 => {
                ensure!(r.code() == "RESOURCE_EXHAUSTED", "{}", r.body);
                ensure!(
                    r.retry_after.is_some_and(|s| s >= 1),
                    "Retry-After {:?}",
                    r.retry_after
                );
                limited += 1;
            }
            s => bail!("burst send: {s} {}", r.body),
        }
    }
    ensure!(
        limited >= 1 && !stored.is_empty(),
        "{} stored, {limited} limited",
        stored.len()
    );
    // Exactly the accepted sends were stored.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let history = g2.history(&u, &conv, "after=0&limit=100").await?;
    let mut got: Vec<String> = history
        .iter()
        .filter_map(|m| m["client_msg_id"].as_str().map(str::to_string))
        .collect();
    got.sort();
    stored.sort();
    ensure!(got == stored, "stored {got:?}, accepted {stored:?}");
    // Another user is not held back by this one.
    g1.ok(Method::GET, "/v1/conversations", Some(&v.token), None)
        .await?;
    Ok(())
}

pub(super) async fn expired_tokens(env: &Env) -> Result<()> {
    let urls = env.http_urls();
    let g1 = Api::new(&urls[0]);
    let s = g1.signup(&handle("brief"), "web").await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    g1.fails(
        Method::GET,
        "/v1/conversations",
        Some(&s.token),
        None,
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    let conv = new_id();
    let create = json!({"conv_id": conv, "kind": "group", "members": []});
    g1.fails(
        Method::POST,
        "/v1/conversations",
        Some(&s.token),
        Some(create),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    let mut p = Push::open(&urls[1], &s.token, json!({})).await?;
    let f = p
        .next(Duration::from_secs(10))
        .await?
        .context("an error frame")?;
    ensure!(
        f["type"] == "error" && f["code"] == "UNAUTHENTICATED",
        "{f}"
    );
    // The refresh token outlives the access token: a new session, and the rejected create
    // made nothing.
    let fresh = Session::parse(
        g1.ok(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": s.refresh})),
        )
        .await?,
    )?;
    let r = g1
        .call(
            Method::GET,
            &format!("/v1/conversations/{conv}"),
            Some(&fresh.token),
            None,
        )
        .await?;
    // The fresh token lives one second at most: UNAUTHENTICATED is an inconclusive answer here.
    ensure!(
        r.status == 404 || r.status == 401,
        "{} {}",
        r.status,
        r.body
    );
    Ok(())
}
