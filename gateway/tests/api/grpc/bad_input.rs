//! Bad input over gRPC: bytes that are not protobuf, ids of the wrong length, bodies over the
//! limit or not UTF-8. Each gets a stable code and stores nothing.

use std::time::Duration;

use anyhow::{ensure, Result};
use bongsu_proto::v1;
use bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::Channel;

use super::*;
use crate::bounded;
use crate::harness::{Env, Opts};

/// Sends and receives raw bytes, so a test can put anything on the wire.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        let n = src.remaining();
        Ok(Some(src.copy_to_bytes(n).to_vec()))
    }
}

async fn raw_call(
    url: &str,
    method: &'static str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Result<std::result::Result<Vec<u8>, Status>> {
    let channel = Channel::from_shared(url.to_string())?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let req = match token {
        Some(t) => with_token(t, body),
        None => Request::new(body),
    };
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(method);
    Ok(grpc.unary(req, path, Raw).await.map(|r| r.into_inner()))
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_bad_input_gets_a_stable_code_and_stores_nothing() -> Result<()> {
    let env = Env::start("grpc-bad-input", Opts::default()).await?;
    bounded(Duration::from_secs(90), async {
        let urls = env.grpc_urls();
        let mut alice = sign_up(&urls[0], "alice").await?;
        let bob = sign_up(&urls[1], "bob").await?;
        let conv = create(&mut alice, v1::ConversationKind::Direct, vec![bob.user()]).await?;
        alice.api.send(alice.req(text(&conv, "first"))).await?;

        // Bytes that are not protobuf (a field tag that never ends), with and without a token.
        let garbage = vec![0xff; 11];
        expect_code(
            raw_call(&urls[0], "/bongsu.v1.Auth/SignIn", None, garbage.clone()).await?,
            "INVALID_ARGUMENT",
            "SignIn with bytes that are not protobuf",
        )?;
        expect_code(
            raw_call(
                &urls[1],
                "/bongsu.v1.Messenger/Send",
                Some(&alice.session.access_token),
                garbage,
            )
            .await?,
            "INVALID_ARGUMENT",
            "Send with bytes that are not protobuf",
        )?;
        // A length that runs past the end of the message.
        expect_code(
            raw_call(
                &urls[2],
                "/bongsu.v1.Messenger/Send",
                Some(&alice.session.access_token),
                vec![0x0a, 0x40, 0x01],
            )
            .await?,
            "INVALID_ARGUMENT",
            "Send with a truncated field",
        )?;

        // Ids of the wrong length.
        let mut short_conv = text(&conv, "x");
        short_conv.conv_id = vec![1, 2, 3];
        expect_code(
            alice.api.send(alice.req(short_conv)).await,
            "INVALID_ARGUMENT",
            "a 3-byte conversation id",
        )?;
        let mut short_cmid = text(&conv, "x");
        short_cmid.client_msg_id = vec![9; 17];
        expect_code(
            alice.api.send(alice.req(short_cmid)).await,
            "INVALID_ARGUMENT",
            "a 17-byte client message id",
        )?;
        expect_code(
            alice
                .api
                .history(alice.req(v1::HistoryRequest {
                    conv_id: vec![],
                    after: 0,
                    before: 0,
                    limit: 10,
                }))
                .await,
            "INVALID_ARGUMENT",
            "history without a conversation id",
        )?;

        // Bodies: over the limit, text that is not UTF-8, an unknown kind, a SYSTEM message.
        let mut big = text(&conv, "");
        big.body = vec![b'a'; 64 * 1024 + 1];
        expect_code(
            alice.api.send(alice.req(big)).await,
            "MESSAGE_TOO_LARGE",
            "a body over 64 KiB",
        )?;
        let mut latin1 = text(&conv, "");
        latin1.body = vec![0xff, 0xfe, b'h', b'i'];
        expect_code(
            alice.api.send(alice.req(latin1)).await,
            "INVALID_ARGUMENT",
            "text that is not UTF-8",
        )?;
        let mut unknown_kind = text(&conv, "x");
        unknown_kind.kind = 99;
        expect_code(
            alice.api.send(alice.req(unknown_kind)).await,
            "INVALID_ARGUMENT",
            "an unknown message kind",
        )?;
        let mut system = text(&conv, "x");
        system.kind = v1::MessageKind::System as i32;
        expect_code(
            alice.api.send(alice.req(system)).await,
            "INVALID_ARGUMENT",
            "a SYSTEM message from a client",
        )?;
        // An unknown conversation.
        expect_code(
            alice.api.send(alice.req(text(&id(0x77), "x"))).await,
            "UNKNOWN_CONVERSATION",
            "a conversation nobody created",
        )?;

        // Nothing of it was stored.
        let h = alice
            .api
            .history(alice.req(v1::HistoryRequest {
                conv_id: conv.clone(),
                after: 0,
                before: 0,
                limit: 100,
            }))
            .await?
            .into_inner();
        ensure!(
            h.last_seq == 1 && h.messages.len() == 1,
            "only the first message is stored: {h:?}"
        );
        Ok(())
    })
    .await?;
    env.pass();
    Ok(())
}
