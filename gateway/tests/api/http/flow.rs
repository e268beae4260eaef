//! The whole flow through HTTP/JSON, live delivery and resume over WebSocket, devices.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use futures::SinkExt;
use reqwest::Method;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use super::client::*;
use super::refusals::{authorization, bad_input};
use crate::harness::Env;

pub(super) async fn whole_flow(env: &Env) -> Result<()> {
    let urls = env.http_urls();
    let (g1, g2, g3) = (Api::new(&urls[0]), Api::new(&urls[1]), Api::new(&urls[2]));

    // Health, readiness, identity, the OpenAPI document.
    for (i, api) in [&g1, &g2, &g3].into_iter().enumerate() {
        api.ok(Method::GET, "/healthz", None, None).await?;
        api.ok(Method::GET, "/readyz", None, None).await?;
        let info = api.ok(Method::GET, "/v1/info", None, None).await?;
        ensure!(info["dc"] == format!("dc{}", i + 1), "{info}");
        ensure!(info["gateway_id"] == format!("gw{}", i + 1), "{info}");
    }
    let doc = g1.ok(Method::GET, "/v1/openapi.json", None, None).await?;
    for (method, path) in [
        ("post", "/v1/auth/signup"),
        ("post", "/v1/auth/signin"),
        ("post", "/v1/auth/refresh"),
        ("get", "/v1/devices"),
        ("delete", "/v1/devices/{device_id}"),
        ("get", "/v1/info"),
        ("post", "/v1/users/lookup"),
        ("post", "/v1/conversations"),
        ("get", "/v1/conversations"),
        ("get", "/v1/conversations/{conv_id}"),
        ("post", "/v1/conversations/{conv_id}/members"),
        ("post", "/v1/conversations/{conv_id}/messages"),
        ("get", "/v1/conversations/{conv_id}/messages"),
        ("post", "/v1/conversations/{conv_id}/read"),
        ("post", "/v1/sync"),
        ("get", "/v1/ws"),
        ("get", "/healthz"),
        ("get", "/readyz"),
    ] {
        ensure!(
            doc["paths"][path][method].is_object(),
            "OpenAPI lacks {method} {path}"
        );
    }

    // Accounts: sign up on one gateway, a second device on another.
    let (ha, hb, hc) = (handle("alice"), handle("bob"), handle("carol"));
    let a1 = g1.signup(&ha, "phone").await?;
    let a2 = g2.signin(&ha, "pc").await?;
    ensure!(
        a1.user_id == a2.user_id && a1.device_id != a2.device_id,
        "two devices, one user"
    );
    let b = g3.signup(&hb, "tablet").await?;
    let c = g1.signup(&hc, "web").await?;

    let found = g2
        .ok(Method::POST, "/v1/users/lookup", Some(&a2.token), Some(json!({"handles": [hb, hc.to_uppercase(), "nobody_here_x"], "user_ids": [a1.user_id]})))
        .await?;
    let mut users: Vec<(String, String)> = found["users"]
        .as_array()
        .context("users")?
        .iter()
        .map(|u| {
            (
                u["handle"].as_str().unwrap_or("").to_string(),
                u["user_id"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    users.sort();
    let mut want = vec![
        (ha.clone(), a1.user_id.clone()),
        (hb.clone(), b.user_id.clone()),
        (hc.clone(), c.user_id.clone()),
    ];
    want.sort();
    ensure!(users == want, "lookup: {found}");

    // A direct conversation (creating it twice is a no-op) and a group.
    let direct = new_id();
    let create = json!({"conv_id": direct, "kind": "direct", "members": [b.user_id]});
    let conv = g1
        .ok(
            Method::POST,
            "/v1/conversations",
            Some(&a1.token),
            Some(create.clone()),
        )
        .await?;
    ensure!(
        conv["conv_id"] == direct && conv["kind"] == "direct" && conv["last_seq"] == 0,
        "{conv}"
    );
    ensure!(
        conv["members"].as_array().is_some_and(|m| m.len() == 2),
        "{conv}"
    );
    g2.ok(
        Method::POST,
        "/v1/conversations",
        Some(&a1.token),
        Some(create),
    )
    .await?;
    let group = new_id();
    let conv = g2
        .ok(
            Method::POST,
            "/v1/conversations",
            Some(&a2.token),
            Some(json!({"conv_id": group, "kind": "group", "members": [b.user_id, c.user_id]})),
        )
        .await?;
    ensure!(
        conv["kind"] == "group" && conv["members"].as_array().is_some_and(|m| m.len() == 3),
        "{conv}"
    );

    // Sends: seqs are dense, a retry with the same client_msg_id returns the first seq.
    let msg_path = format!("/v1/conversations/{direct}/messages");
    let first = json!({"client_msg_id": new_id(), "kind": "text", "text": "안녕, bob"});
    let r = g1
        .ok(
            Method::POST,
            &msg_path,
            Some(&a1.token),
            Some(first.clone()),
        )
        .await?;
    ensure!(r == json!({"seq": 1, "duplicate": false}), "{r}");
    let r = g3
        .ok(Method::POST, &msg_path, Some(&a2.token), Some(first))
        .await?;
    ensure!(r == json!({"seq": 1, "duplicate": true}), "{r}");
    ensure!(g2.send(&b, &direct, "hi alice").await? == 2, "second seq");
    ensure!(
        g1.send(&a1, &direct, "how are you").await? == 3,
        "third seq"
    );
    let sealed = json!({"client_msg_id": new_id(), "kind": "sealed", "body_base64": "AP8Q"});
    let r = g1
        .ok(Method::POST, &msg_path, Some(&a1.token), Some(sealed))
        .await?;
    ensure!(r["seq"] == 4, "{r}");

    // History, forwards and backwards, from every gateway and device.
    let all = g3.history(&a2, &direct, "after=0").await?;
    ensure!(seqs(&all) == [1, 2, 3, 4], "history {all:?}");
    ensure!(
        all[0]["text"] == "안녕, bob" && all[0]["kind"] == "text" && all[0]["sender"] == a1.user_id,
        "{}",
        all[0]
    );
    ensure!(
        all[0]["device"] == a1.device_id && all[0]["sent_at_ms"].as_u64().is_some_and(|t| t > 0),
        "{}",
        all[0]
    );
    ensure!(
        all[3]["kind"] == "sealed"
            && all[3]["body_base64"] == "AP8Q"
            && all[3].get("text").is_none(),
        "{}",
        all[3]
    );
    ensure!(
        seqs(&g2.history(&b, &direct, "after=2").await?) == [3, 4],
        "after=2"
    );
    ensure!(
        seqs(&g2.history(&b, &direct, "before=3&limit=10").await?) == [1, 2],
        "before=3"
    );
    ensure!(
        seqs(&g2.history(&b, &direct, "before=5&limit=2").await?) == [3, 4],
        "newest two"
    );
    ensure!(
        seqs(&g2.history(&b, &direct, "after=0&limit=2").await?) == [1, 2],
        "oldest two"
    );
    let page = g1
        .ok(
            Method::GET,
            &format!("{msg_path}?after=0"),
            Some(&a1.token),
            None,
        )
        .await?;
    ensure!(page["last_seq"] == 4, "{page}");

    // The list (eventually consistent) with unread counts; reading moves them, never back.
    let s = eventually("bob's list shows the direct conversation", || async {
        Ok(summary(&g3, &b, &direct)
            .await?
            .filter(|s| s["last_seq"] == 4))
    })
    .await?;
    ensure!(
        s["kind"] == "direct" && s["read_seq"] == 0 && s["unread"] == 4,
        "{s}"
    );
    ensure!(s["last_message"]["seq"] == 4, "{s}");
    let read_path = format!("/v1/conversations/{direct}/read");
    let r = g3
        .ok(
            Method::POST,
            &read_path,
            Some(&b.token),
            Some(json!({"seq": 2})),
        )
        .await?;
    ensure!(r == json!({"read_seq": 2}), "{r}");
    let r = g1
        .ok(
            Method::POST,
            &read_path,
            Some(&b.token),
            Some(json!({"seq": 1})),
        )
        .await?;
    ensure!(
        r == json!({"read_seq": 2}),
        "the cursor never moves back: {r}"
    );
    eventually("bob's unread count drops to 2", || async {
        Ok(summary(&g2, &b, &direct)
            .await?
            .filter(|s| s["unread"] == 2 && s["read_seq"] == 2))
    })
    .await?;
    let g = eventually("carol's list shows the group", || async {
        summary(&g1, &c, &group).await
    })
    .await?;
    ensure!(g["last_message"].is_null() && g["unread"] == 0, "{g}");

    // Sync from cursors.
    let sync = eventually("bob's sync names both conversations", || async {
        let r = g2
            .ok(
                Method::POST,
                "/v1/sync",
                Some(&b.token),
                Some(json!({"cursors": {&direct: 2}, "limit_per_conversation": 10})),
            )
            .await?;
        let convs = r["conversations"].as_array().cloned().unwrap_or_default();
        Ok((convs.len() == 2).then_some(convs))
    })
    .await?;
    let d = sync
        .iter()
        .find(|c| c["conversation"]["conv_id"] == direct)
        .context("direct in sync")?;
    ensure!(
        seqs(d["messages"].as_array().context("messages")?) == [3, 4] && d["has_more"] == false,
        "{d}"
    );
    let limited = g2
        .ok(
            Method::POST,
            "/v1/sync",
            Some(&b.token),
            Some(json!({"cursors": {&direct: 0}, "limit_per_conversation": 1})),
        )
        .await?;
    let d = limited["conversations"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["conversation"]["conv_id"] == direct))
        .context("direct")?;
    ensure!(
        seqs(d["messages"].as_array().context("messages")?) == [1] && d["has_more"] == true,
        "{d}"
    );

    push_live_and_resume(&urls, &g1, &a1, &b, &direct).await?;
    authorization(&urls, &g1, &g2, &a1, &b, &c, &group).await?;
    bad_input(&g1, &g2, &a1, &b, &ha, &direct).await?;
    devices(&g1, &g2, &g3, &a1, &a2).await?;
    Ok(())
}

/// Live delivery over WebSocket, then a reconnect from the last seq seen: no gap, no duplicate.
async fn push_live_and_resume(
    urls: &[String],
    g1: &Api,
    a: &Session,
    b: &Session,
    direct: &str,
) -> Result<()> {
    let mut p = Push::ready(&urls[1], &b.token, json!({direct: 4})).await?;
    ensure!(g1.send(a, direct, "live 5").await? == 5, "seq 5");
    ensure!(p.messages_until(direct, 5).await? == [5], "live delivery");
    drop(p);
    for i in 6..=7 {
        ensure!(
            g1.send(a, direct, &format!("missed {i}")).await? == i,
            "seq {i}"
        );
    }
    let mut p = Push::ready(&urls[2], &b.token, json!({direct: 5})).await?;
    ensure!(g1.send(a, direct, "live 8").await? == 8, "seq 8");
    ensure!(
        p.messages_until(direct, 8).await? == [6, 7, 8],
        "resume from seq 5"
    );
    // Read events reach the reader's other connections.
    let r = g1
        .ok(
            Method::POST,
            &format!("/v1/conversations/{direct}/read"),
            Some(&b.token),
            Some(json!({"seq": 8})),
        )
        .await?;
    ensure!(r["read_seq"] == 8, "{r}");
    loop {
        let f = p
            .next(Duration::from_secs(10))
            .await?
            .context("a read event")?;
        if f["type"] == "read" && f["conv_id"] == direct {
            ensure!(f["read_seq"] == 8, "{f}");
            break;
        }
    }
    // Bad subscriptions end with an error frame and a close.
    let mut bad = Push::open(&urls[0], "not-a-token", json!({})).await?;
    let f = bad
        .next(Duration::from_secs(10))
        .await?
        .context("an error frame")?;
    ensure!(
        f["type"] == "error" && f["code"] == "UNAUTHENTICATED",
        "{f}"
    );
    ensure!(
        bad.next(Duration::from_secs(5)).await?.is_none(),
        "closed after the error"
    );
    let url = format!("{}/v1/ws", urls[0].replacen("http://", "ws://", 1));
    for frame in [
        "{not json",
        r#"{"type":"publish"}"#,
        &json!({"type": "subscribe", "token": b.token, "cursors": {"xyz": 1}}).to_string(),
    ] {
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await?;
        ws.send(WsMessage::text(frame.to_string())).await?;
        let mut p = Push { ws };
        let f = p
            .next(Duration::from_secs(10))
            .await?
            .context("an error frame")?;
        ensure!(
            f["type"] == "error" && f["code"] == "INVALID_ARGUMENT",
            "{frame}: {f}"
        );
    }
    Ok(())
}

/// The device list, revocation, and refresh tokens.
async fn devices(g1: &Api, g2: &Api, g3: &Api, a1: &Session, a2: &Session) -> Result<()> {
    let list = g1
        .ok(Method::GET, "/v1/devices", Some(&a1.token), None)
        .await?;
    let devices = list["devices"].as_array().context("devices")?;
    let me = devices
        .iter()
        .find(|d| d["device_id"] == a1.device_id)
        .context("this device")?;
    ensure!(
        me["current"] == true && me["revoked"] == false && me["kind"] == "phone",
        "{me}"
    );
    let other = devices
        .iter()
        .find(|d| d["device_id"] == a2.device_id)
        .context("the pc")?;
    ensure!(
        other["current"] == false && other["kind"] == "pc",
        "{other}"
    );

    // Refresh: a new session for the same device. The spent token is accepted once more
    // within a minute (its reply may have been lost), which kills the token issued in between;
    // after that it is refused.
    let fresh = Session::parse(
        g2.ok(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": a2.refresh})),
        )
        .await?,
    )?;
    ensure!(
        fresh.device_id == a2.device_id && fresh.user_id == a2.user_id,
        "same device"
    );
    let again = Session::parse(
        g2.ok(
            Method::POST,
            "/v1/auth/refresh",
            None,
            Some(json!({"refresh_token": a2.refresh})),
        )
        .await?,
    )?;
    ensure!(again.device_id == a2.device_id, "same device");
    for (what, token) in [("in between", &fresh.refresh), ("spent twice", &a2.refresh)] {
        let r = g2
            .call(
                Method::POST,
                "/v1/auth/refresh",
                None,
                Some(json!({"refresh_token": token})),
            )
            .await?;
        ensure!(
            r.status == 401 && r.code() == "UNAUTHENTICATED",
            "refresh with the token {what}: {} {}",
            r.status,
            r.body
        );
    }
    g2.fails(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({})),
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    g2.fails(
        Method::DELETE,
        "/v1/devices/not-a-device",
        Some(&a1.token),
        None,
        400,
        "INVALID_ARGUMENT",
    )
    .await?;

    let r = g3
        .ok(
            Method::DELETE,
            &format!("/v1/devices/{}", a2.device_id),
            Some(&a1.token),
            None,
        )
        .await?;
    ensure!(r == json!({}), "{r}");
    let list = g1
        .ok(Method::GET, "/v1/devices", Some(&a1.token), None)
        .await?;
    let other = list["devices"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["device_id"] == a2.device_id).cloned())
        .context("the pc")?;
    ensure!(other["revoked"] == true, "{other}");
    // Its refresh token stops at once, its access tokens within the device check interval.
    g1.fails(
        Method::POST,
        "/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": fresh.refresh})),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    eventually("the revoked device's token stops working", || async {
        let r = g2
            .call(Method::GET, "/v1/conversations", Some(&fresh.token), None)
            .await?;
        Ok((r.status == 401 && r.code() == "UNAUTHENTICATED").then_some(()))
    })
    .await?;
    g1.ok(Method::GET, "/v1/devices", Some(&a1.token), None)
        .await?;
    Ok(())
}
