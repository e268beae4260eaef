//! What must be refused, with which status and stable code, and that it changed nothing.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use reqwest::Method;
use serde_json::json;

use super::client::*;

/// Someone who is not a member gets `NOT_MEMBER` on every route and no push of the conversation,
/// and nothing they tried changes it.
pub(super) async fn authorization(
    urls: &[String],
    g1: &Api,
    g2: &Api,
    a: &Session,
    b: &Session,
    c: &Session,
    group: &str,
) -> Result<()> {
    let private = new_id();
    g1.ok(
        Method::POST,
        "/v1/conversations",
        Some(&a.token),
        Some(json!({"conv_id": private, "kind": "group", "members": [b.user_id]})),
    )
    .await?;
    ensure!(g1.send(a, &private, "secret 1").await? == 1, "seq 1");
    // Carol listens with a cursor on it before anything else is sent.
    let mut spy = Push::open(&urls[2], &c.token, json!({&private: 0, group: 0})).await?;

    let base = format!("/v1/conversations/{private}");
    let attempts = [
        (Method::GET, base.clone(), None),
        (Method::GET, format!("{base}/messages?after=0"), None),
        (
            Method::POST,
            format!("{base}/messages"),
            Some(json!({"client_msg_id": new_id(), "kind": "text", "text": "let me in"})),
        ),
        (
            Method::POST,
            format!("{base}/read"),
            Some(json!({"seq": 1})),
        ),
        (
            Method::POST,
            format!("{base}/members"),
            Some(json!({"add": [c.user_id]})),
        ),
        (
            Method::POST,
            format!("{base}/members"),
            Some(json!({"remove": [b.user_id]})),
        ),
    ];
    for (method, path, body) in attempts {
        g2.fails(method, &path, Some(&c.token), body, 403, "NOT_MEMBER")
            .await?;
    }
    // Sync with a cursor on it returns nothing of it.
    let r = g2
        .call(
            Method::POST,
            "/v1/sync",
            Some(&c.token),
            Some(json!({"cursors": {&private: 0}})),
        )
        .await?;
    ensure!(
        r.status == 403 || !r.body.to_string().contains(&private),
        "sync leaked: {} {}",
        r.status,
        r.body
    );

    ensure!(g1.send(a, &private, "secret 2").await? == 2, "seq 2");
    let marker = g1.send(a, group, "for carol").await?;
    // Carol either is refused outright or gets the group message and nothing of the other.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut saw_marker = false;
    while Instant::now() < deadline {
        let Some(f) = spy
            .next(Duration::from_secs(if saw_marker { 2 } else { 15 }))
            .await?
        else {
            break;
        };
        ensure!(!f.to_string().contains(&private), "carol received {f}");
        if f["type"] == "error" {
            ensure!(f["code"] == "NOT_MEMBER", "{f}");
            break;
        }
        if f["type"] == "message"
            && f["message"]["conv_id"] == group
            && f["message"]["seq"] == marker
        {
            saw_marker = true;
        }
    }

    // Nothing changed: two messages, the same members, not in carol's list, bob's cursor at 0.
    ensure!(
        seqs(&g1.history(a, &private, "after=0").await?) == [1, 2],
        "history changed"
    );
    let conv = g1.ok(Method::GET, &base, Some(&a.token), None).await?;
    let members: Vec<&str> = conv["members"]
        .as_array()
        .context("members")?
        .iter()
        .filter_map(|m| m["user_id"].as_str())
        .collect();
    ensure!(
        members.len() == 2 && !members.contains(&c.user_id.as_str()),
        "{conv}"
    );
    ensure!(summary(g2, c, &private).await?.is_none(), "in carol's list");
    let s = eventually("bob's list shows it", || async {
        summary(g2, b, &private).await
    })
    .await?;
    ensure!(s["read_seq"] == 0, "{s}");
    Ok(())
}

/// Every bad input: its status, its stable code, and that nothing was stored.
pub(super) async fn bad_input(
    g1: &Api,
    g2: &Api,
    a: &Session,
    b: &Session,
    ha: &str,
    direct: &str,
) -> Result<()> {
    let msg_path = format!("/v1/conversations/{direct}/messages");
    let before = g1.history(a, direct, "after=0").await?;
    let text = |t: String| json!({"client_msg_id": new_id(), "kind": "text", "text": t});

    // Bodies over the limit: over max_body_bytes (the service), and over the JSON limit.
    g1.fails(
        Method::POST,
        &msg_path,
        Some(&a.token),
        Some(text("x".repeat(64 * 1024 + 1))),
        413,
        "MESSAGE_TOO_LARGE",
    )
    .await?;
    g1.fails(
        Method::POST,
        &msg_path,
        Some(&a.token),
        Some(text("x".repeat(200 * 1024))),
        413,
        "MESSAGE_TOO_LARGE",
    )
    .await?;
    // Text that is not UTF-8.
    let bad_utf8 = json!({"client_msg_id": new_id(), "kind": "text", "body_base64": "//4="});
    g1.fails(
        Method::POST,
        &msg_path,
        Some(&a.token),
        Some(bad_utf8),
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    let bad_card = json!({"client_msg_id": new_id(), "kind": "link_card", "body_base64": "wyg="});
    g1.fails(
        Method::POST,
        &msg_path,
        Some(&a.token),
        Some(bad_card),
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    // Malformed JSON, wrong content type, missing fields, unknown enums, bad ids.
    let raw = |body: &'static str, ct: &'static str| {
        g1.http
            .post(format!("{}{msg_path}", g1.base))
            .bearer_auth(&a.token)
            .header("content-type", ct)
            .body(body)
    };
    for (body, ct) in [
        (r#"{"client_msg_id": "#, "application/json"),
        (
            r#"{"client_msg_id":"00000000000000000000000000000001","kind":"text","text":"x"}"#,
            "text/plain",
        ),
        (r#"{"kind":"text","text":"x"}"#, "application/json"),
        (
            r#"{"client_msg_id":"00000000000000000000000000000001","kind":"video","text":"x"}"#,
            "application/json",
        ),
        (
            r#"{"client_msg_id":"not-an-id","kind":"text","text":"x"}"#,
            "application/json",
        ),
        (
            r#"{"client_msg_id":"00000000000000000000000000000001","kind":"text"}"#,
            "application/json",
        ),
        (
            r#"{"client_msg_id":"00000000000000000000000000000001","kind":"system","text":"forged"}"#,
            "application/json",
        ),
    ] {
        let r = g1.raw(raw(body, ct)).await?;
        ensure!(
            r.status == 400 && r.code() == "INVALID_ARGUMENT",
            "{body} ({ct}): {} {}",
            r.status,
            r.body
        );
    }
    g1.fails(
        Method::GET,
        "/v1/conversations/xyz/messages",
        Some(&a.token),
        None,
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    let r = g1
        .fails(
            Method::POST,
            "/v1/conversations/0123/read",
            Some(&a.token),
            Some(json!({"seq": 1})),
            400,
            "INVALID_ARGUMENT",
        )
        .await?;
    ensure!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("conv_id")),
        "{}",
        r.body
    );
    g1.fails(
        Method::GET,
        &format!("{msg_path}?after=-1"),
        Some(&a.token),
        None,
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    g1.fails(
        Method::POST,
        &format!("/v1/conversations/{direct}/read"),
        Some(&a.token),
        Some(json!({"seq": "two"})),
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    // A bad or missing token.
    g1.fails(
        Method::POST,
        &msg_path,
        Some("garbage"),
        Some(text("x".into())),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    g1.fails(
        Method::POST,
        &msg_path,
        None,
        Some(text("x".into())),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    let forged = format!("{}x", a.token);
    g1.fails(
        Method::GET,
        "/v1/conversations",
        Some(&forged),
        None,
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    ensure!(
        g1.history(a, direct, "after=0").await? == before,
        "a rejected send was stored"
    );
    ensure!(
        g2.history(b, direct, "after=0").await? == before,
        "a rejected send was stored"
    );

    // Unknown conversations: nothing is created by asking.
    let ghost = new_id();
    let ghost_path = format!("/v1/conversations/{ghost}");
    g1.fails(
        Method::POST,
        &format!("{ghost_path}/messages"),
        Some(&a.token),
        Some(text("boo".into())),
        404,
        "UNKNOWN_CONVERSATION",
    )
    .await?;
    g1.fails(
        Method::GET,
        &format!("{ghost_path}/messages"),
        Some(&a.token),
        None,
        404,
        "UNKNOWN_CONVERSATION",
    )
    .await?;
    g1.fails(
        Method::POST,
        &format!("{ghost_path}/read"),
        Some(&a.token),
        Some(json!({"seq": 1})),
        404,
        "UNKNOWN_CONVERSATION",
    )
    .await?;
    g1.fails(
        Method::GET,
        &ghost_path,
        Some(&a.token),
        None,
        404,
        "UNKNOWN_CONVERSATION",
    )
    .await?;
    ensure!(
        summary(g1, a, &ghost).await?.is_none(),
        "a ghost in the list"
    );
    // A create with a bad member id or kind creates nothing.
    let bad_creates = [
        json!({"conv_id": ghost, "kind": "group", "members": ["zz"]}),
        json!({"conv_id": ghost, "kind": "triad", "members": [b.user_id]}),
        json!({"conv_id": "short", "kind": "group", "members": [b.user_id]}),
        json!({"conv_id": ghost, "kind": "group"}),
    ];
    for body in bad_creates {
        g1.fails(
            Method::POST,
            "/v1/conversations",
            Some(&a.token),
            Some(body),
            400,
            "INVALID_ARGUMENT",
        )
        .await?;
    }
    g1.fails(
        Method::GET,
        &ghost_path,
        Some(&a.token),
        None,
        404,
        "UNKNOWN_CONVERSATION",
    )
    .await?;

    // Handles that break the rules, and a taken one; none of them makes an account.
    let signup = |h: String| json!({"handle": h, "password": "new-password-1", "device": {"kind": "web", "name": "w"}});
    let bad_handles = [
        "ab".to_string(),
        "a".repeat(33),
        "bad handle".into(),
        "bad-handle!".into(),
        ".dotfirst".into(),
        "dotlast.".into(),
        "한글이름".into(),
    ];
    for h in &bad_handles {
        g2.fails(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(signup(h.clone())),
            400,
            "INVALID_ARGUMENT",
        )
        .await?;
    }
    g2.fails(
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(signup(ha.to_string())),
        409,
        "HANDLE_TAKEN",
    )
    .await?;
    g2.fails(
        Method::POST,
        "/v1/auth/signup",
        None,
        Some(signup(ha.to_uppercase())),
        409,
        "HANDLE_TAKEN",
    )
    .await?;
    // The taken handle still belongs to its owner, whose password is unchanged.
    let signin =
        |pw: &str| json!({"handle": ha, "password": pw, "device": {"kind": "web", "name": "w"}});
    g1.fails(
        Method::POST,
        "/v1/auth/signin",
        None,
        Some(signin("new-password-1")),
        401,
        "UNAUTHENTICATED",
    )
    .await?;
    let again = Session::parse(
        g1.ok(
            Method::POST,
            "/v1/auth/signin",
            None,
            Some(signin(&format!("pw-{ha}"))),
        )
        .await?,
    )?;
    ensure!(again.user_id == a.user_id, "the handle moved");
    let found = g1
        .ok(
            Method::POST,
            "/v1/users/lookup",
            Some(&a.token),
            Some(json!({"handles": [ha]})),
        )
        .await?;
    ensure!(
        found["users"]
            .as_array()
            .is_some_and(|u| u.len() == 1 && u[0]["user_id"] == a.user_id),
        "{found}"
    );
    let bad_devices = [
        json!({"handle": handle("dave"), "password": "long-enough-1", "device": {"kind": "toaster", "name": "t"}}),
        json!({"handle": handle("dave"), "password": "long-enough-1"}),
    ];
    for body in bad_devices {
        g2.fails(
            Method::POST,
            "/v1/auth/signup",
            None,
            Some(body),
            400,
            "INVALID_ARGUMENT",
        )
        .await?;
    }
    g2.fails(
        Method::POST,
        "/v1/users/lookup",
        Some(&a.token),
        Some(json!({"user_ids": ["nope"]})),
        400,
        "INVALID_ARGUMENT",
    )
    .await?;
    // Unknown routes and methods answer in JSON too.
    g2.fails(
        Method::GET,
        "/v1/nothing",
        None,
        None,
        404,
        "INVALID_ARGUMENT",
    )
    .await?;
    g2.fails(
        Method::PUT,
        "/v1/sync",
        Some(&a.token),
        None,
        405,
        "INVALID_ARGUMENT",
    )
    .await?;
    ensure!(
        g1.history(a, direct, "after=0").await? == before,
        "history changed"
    );
    Ok(())
}
