//! bongsu-client: the Rust SDK over the public gRPC API (`bongsu.v1`).
//!
//! What it adds over the generated stubs is what makes a chat client survive a datacenter
//! failure without its user noticing:
//!
//! - **several gateways**: [`Client::connect`] takes one endpoint per datacenter; a call that
//!   finds its gateway gone moves to the next (gateways are stateless, any one serves any
//!   request);
//! - **safe retries**: every call is idempotent ([`Client::send_text`] picks a client message id
//!   once and retries with it; conversations are created under client-chosen ids), retried
//!   with exponential backoff and jitter within a deadline, honouring `Retry-After`;
//! - **sessions**: sign-up and sign-in keep the session; the access token is refreshed before
//!   it expires and once when a gateway rejects it, and the single-use refresh token is never
//!   spent twice;
//! - **resumable push**: [`Client::subscribe`] is a [`futures::Stream`] that reconnects by itself
//!   and resumes after the last seq it delivered per conversation, with no gap and no
//!   duplicate;
//! - **stable error codes**: [`Error::code`] gives the server's [`ErrorCode`] (`NOT_MEMBER`, ...).
//!
//! This crate speaks only the public API: it must not depend on the gateway, the nodes or
//! storage.
//!
//! ```no_run
//! # async fn demo() -> bongsu_client::Result<()> {
//! use bongsu_client::{Client, DeviceInfo, DeviceKind};
//! use futures::StreamExt;
//!
//! let client = Client::connect(vec![
//!     "http://127.0.1.1:8081".into(),
//!     "http://127.0.2.1:8081".into(),
//!     "http://127.0.3.1:8081".into(),
//! ])
//! .await?;
//! client.sign_in("jisoo", "correct horse", DeviceInfo::new(DeviceKind::Pc, "laptop")).await?;
//! let bob = client.lookup_handle("bob").await?.expect("bob has an account");
//! let conv = client.create_direct(bob.id).await?;
//! client.send_text(conv.id, "hello").await?;
//! let mut events = client.subscribe().await?;
//! while let Some(event) = events.next().await {
//!     println!("{:?}", event?);
//! }
//! # Ok(())
//! # }
//! ```

mod api;
mod backoff;
mod client;
mod cursors;
pub mod errors;
mod session;
mod subscribe;
mod types;

pub use api::{Device, Sent};
pub use backoff::Backoff;
pub use client::{Client, Options};
pub use cursors::{Cursors, Verdict};
pub use errors::{Error, Result};
pub use session::Session;
pub use subscribe::Subscription;
pub use types::{
    direct_conv_id, new_client_msg_id, new_conv_id, text_of, Conversation, ConversationSummary,
    DeviceInfo, DeviceKind, Event, History, Member, SyncedConversation, User,
};

pub use bongsu_proto::model::{
    ClientMsgId, ConvId, ConversationKind, DeviceId, Message, MessageKind, UserId,
};
pub use bongsu_proto::ErrorCode;
