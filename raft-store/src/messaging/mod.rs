//! The messaging state machine: what a committed command does to a shard's state.
//!
//! Commands ([`command`]: [`CreateConversation`], [`ChangeMembers`], [`AppendMessage`],
//! [`MoveCursor`], and between nodes [`UserConv`], [`OutboxDone`] and [`Prune`]) create
//! conversations, change membership, append messages, move read cursors, carry membership
//! changes to members' own shards through an outbox ([`outbox`]) and prune bookkeeping nobody
//! needs any more ([`retention`]). [`crate::Command`] carries each, and [`crate::apply`] hands
//! it to this module's `apply` (or `outbox`, or `retention`). Applying them is
//! deterministic: it reads only the shard's own state and the command (timestamps come inside
//! the command, set by the proposer), so every replica that applies the same log reaches the
//! same state.
//!
//! Rules, checked before anything is written so that a rejected command changes nothing:
//! - a conversation's messages get dense sequence numbers 1, 2, 3, …;
//! - a repeated `client_msg_id` from the same sender in the same conversation returns the
//!   original seq and stores nothing (idempotent sends, ARCHITECTURE.md invariant 4) for at
//!   least the dedup window, 24 hours after the first send's `at_ms`
//!   ([`DEDUP_WINDOW_MS`]); after it the dedup key may be pruned;
//! - events (`06`, `09`) are pruned from the bottom of the log up, never past a message whose
//!   dedup window is open, and a resume from below what is kept is refused
//!   ([`EventsPruned`]) rather than answered with a hole; membership tombstones are kept
//!   (ARCHITECTURE.md invariant 10, the [`retention`] docs say why);
//! - only members append; in a channel only the owner appends; bodies obey the size limit and
//!   text bodies are UTF-8;
//! - direct conversations have exactly two members, fixed at creation.
//!
//! State layout in the `sm` column family, after the group prefix:
//!
//! | tag | rest of key | value |
//! | --- | --- | --- |
//! | `00` | — | applied log id and last membership (the engine's: [`crate::keys::TAG_APPLIED`]) |
//! | `01` | conv | [`ConvRecord`](layout::ConvRecord): kind, owner, member count, last seq |
//! | `02` | conv · user | [`Role`](layout::Role) |
//! | `03` | conv · seq | [`Message`](bongsu_proto::model::Message) |
//! | `04` | conv · sender · client_msg_id | seq (dedup) |
//! | `05` | user · conv | read cursor (seq) |
//! | `06` | log index | (conv, seq) of the message that entry appended, for subscribers |
//! | `07` | log index · user | [`OutboxEntry`](layout::OutboxEntry): conv, joined or left; in the conversation's shard until delivered (see [`outbox`]) |
//! | `08` | user · conv | [`UserConvRecord`](layout::UserConvRecord): joined, version (source log index); in the user's shard |
//! | `09` | log index | list of [`UserEvent`](layout::UserEvent): joined, left or read, for subscribers |
//! | `0a` | — | [`RetentionRecord`](layout::RetentionRecord): the oldest log index whose events (`06`, `09`) are kept |
//!
//! Tags `05` and `08` are a user's own state and live in the user's shard; `09` is written
//! in the user's shard (deliveries, cursor moves) and in the conversation's (a removal, at the
//! `ChangeMembers` entry, so that the conversation's own stream shows it in order with the
//! messages); `0a` in every shard; the others live in the conversation's. `04`, `06` and
//! `09` are pruned by [`Prune`] ([`retention`]); the rest stay (`07` until delivered). The
//! other machines' tags are listed in [`crate::apply`].

pub(crate) mod apply;
pub mod command;
pub mod layout;
pub mod outbox;
mod read;
mod read_user;
pub mod retention;

pub use command::{
    AppendMessage, ChangeMembers, CreateConversation, MoveCursor, OutboxDone, Prune, UserConv,
};
pub use read::{ConversationInfo, MessagingView, READ_MAX_BYTES};
pub use read_user::{PendingDelivery, ShardEvent};
pub use retention::{EventsPruned, DEDUP_WINDOW_MS, PRUNE_MAX_DELETES};

#[cfg(test)]
mod outbox_tests;
#[cfg(test)]
mod prop_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod tests;
