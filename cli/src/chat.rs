//! `bongsu send`, `bongsu tail` and `bongsu conversations`: chatting from a terminal.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, Context};
use bongsu_client::{
    text_of, Client, ConvId, ConversationKind, ConversationSummary, Event, Message, UserId,
};
use futures::StreamExt as _;

use crate::account::Conn;

#[derive(clap::Args)]
pub struct SendArgs {
    /// A handle (for the direct conversation with that person, created on first use) or a
    /// conversation id (32 hex digits).
    pub to: String,
    /// The text; several words are joined with spaces.
    #[arg(required = true, num_args = 1..)]
    pub text: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args)]
pub struct TailArgs {
    /// Only this conversation (32 hex digits); all of yours by default.
    pub conv: Option<String>,
    /// Exit after printing this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub conn: Conn,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn send(a: SendArgs) -> anyhow::Result<()> {
    let client = a.conn.signed_in().await?;
    let conv = match a.to.parse::<ConvId>() {
        Ok(conv) => conv,
        Err(_) => {
            let handle = a.to.trim_start_matches('@');
            let user = client
                .lookup_handle(handle)
                .await
                .with_context(|| format!("look up {handle}"))?
                .with_context(|| format!("nobody has the handle {handle:?}"))?;
            client
                .create_direct(user.id)
                .await
                .with_context(|| format!("open the direct conversation with {handle}"))?
                .id
        }
    };
    let text = a.text.join(" ");
    let sent = client
        .send_text(conv, &text)
        .await
        .with_context(|| format!("send to conversation {conv}"))?;
    println!("sent: seq {} in conversation {conv}", sent.seq);
    Ok(())
}

/// Names for conversations and people, learned from the conversation list and as events
/// arrive.
#[derive(Default)]
struct Names {
    me: Option<UserId>,
    handles: HashMap<UserId, String>,
    convs: HashMap<ConvId, String>,
}

impl Names {
    fn learn(&mut self, c: &ConversationSummary) {
        for m in &c.members {
            self.handles.insert(m.user, m.handle.clone());
        }
        let other = c
            .members
            .iter()
            .find(|m| Some(m.user) != self.me)
            .map(|m| m.handle.clone());
        let label = match (c.kind, other) {
            (ConversationKind::Direct, Some(h)) => format!("@{h}"),
            _ => format!("#{}", &c.id.to_string()[..8]),
        };
        self.convs.insert(c.id, label);
    }

    fn conv(&self, id: &ConvId) -> String {
        self.convs
            .get(id)
            .cloned()
            .unwrap_or_else(|| format!("#{}", &id.to_string()[..8]))
    }

    async fn handle(&mut self, client: &Client, user: UserId) -> String {
        if let Some(h) = self.handles.get(&user) {
            return h.clone();
        }
        // One lookup per unknown sender; on failure the id is shown, which is still useful.
        match client.lookup_users(&[], &[user]).await {
            Ok(users) => {
                for u in users {
                    self.handles.insert(u.id, u.handle);
                }
            }
            Err(e) => eprintln!("tail: could not look up user {user}: {e}"),
        }
        self.handles
            .get(&user)
            .cloned()
            .unwrap_or_else(|| user.to_string())
    }
}

fn line(conv: &str, sender: &str, m: &Message) -> String {
    match text_of(m) {
        Some(text) => format!("[{conv}] {sender}: {text}"),
        None => format!("[{conv}] {sender}: <{:?}, {} bytes>", m.kind, m.body.len()),
    }
}

pub async fn tail(a: TailArgs) -> anyhow::Result<()> {
    let only: Option<ConvId> = a
        .conv
        .as_deref()
        .map(|c| {
            c.parse()
                .with_context(|| format!("read the conversation id {c:?}"))
        })
        .transpose()?;
    let client = a.conn.signed_in().await?;
    let mut names = Names {
        me: client.me().ok(),
        ..Names::default()
    };
    let convs = client
        .list_conversations()
        .await
        .context("list your conversations")?;
    for c in &convs {
        names.learn(c);
    }
    if let Some(c) = only {
        if !convs.iter().any(|s| s.id == c) {
            bail!("conversation {c} is not one of yours");
        }
    }
    // Start at "now" in every conversation: tail shows what is said from here on.
    let mut events = client.subscribe_from(convs.iter().map(|c| (c.id, c.last_seq)));
    eprintln!(
        "tail: listening to {} conversation(s) through {}; Ctrl-C stops",
        if only.is_some() { 1 } else { convs.len() },
        client.endpoint()
    );
    let mut printed = 0u64;
    let mut reconnects = 0;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut out = std::io::stdout();
    while a.count.is_none_or(|n| printed < n) {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tick.tick() => {
                if events.reconnects() != reconnects {
                    reconnects = events.reconnects();
                    eprintln!("tail: resumed through {}", events.endpoint());
                }
            }
            ev = events.next() => {
                let Some(ev) = ev else { bail!("the subscription ended") };
                match ev.context("receive live events")? {
                    Event::Message(m) if only.is_none_or(|c| c == m.conv_id) => {
                        let sender = names.handle(&client, m.sender).await;
                        let text = line(&names.conv(&m.conv_id), &sender, &m);
                        // A closed pipe (`bongsu tail | head`) ends the tail quietly.
                        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
                            return Ok(());
                        }
                        printed += 1;
                    }
                    Event::Joined(c) => {
                        names.learn(&c);
                        eprintln!("tail: you are now in {}", names.conv(&c.id));
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

pub async fn conversations(a: ListArgs) -> anyhow::Result<()> {
    let client = a.conn.signed_in().await?;
    let mut names = Names {
        me: client.me().ok(),
        ..Names::default()
    };
    let convs = client
        .list_conversations()
        .await
        .context("list your conversations")?;
    if convs.is_empty() {
        println!("no conversations yet: bongsu send <handle> <text> starts one");
        return Ok(());
    }
    println!(
        "{:<32}  {:<7} {:>6} {:>6}  {:<20} last message",
        "conversation", "kind", "unread", "last", "with"
    );
    for c in &convs {
        names.learn(c);
        let with: Vec<&str> = c
            .members
            .iter()
            .filter(|m| Some(m.user) != names.me)
            .map(|m| m.handle.as_str())
            .collect();
        let last = match &c.last_message {
            Some(m) => {
                let sender = names.handle(&client, m.sender).await;
                let text = text_of(m).unwrap_or("<not text>");
                let short: String = text.chars().take(40).collect();
                format!("{sender}: {short}")
            }
            None => String::new(),
        };
        println!(
            "{:<32}  {:<7} {:>6} {:>6}  {:<20} {}",
            c.id.to_string(),
            format!("{:?}", c.kind).to_lowercase(),
            c.unread,
            c.last_seq,
            with.join(","),
            last
        );
    }
    Ok(())
}
