//! The SDK's retry and resume logic against scripted in-process gateways: fast and exact about
//! what a gateway does wrong (a dropped stream, a replay of old messages, a skipped seq, a busy
//! leader), which a real deployment only does by chance. The real thing is tested in
//! `gateway/tests/api/sdk.rs`.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bongsu_client::{Client, ConvId, ErrorCode, Event, Options, Session, UserId};
use bongsu_proto::v1;
use bongsu_proto::v1::auth_server::{Auth, AuthServer};
use bongsu_proto::v1::messenger_server::{Messenger, MessengerServer};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

type Reply<T> = Result<Response<T>, Status>;

/// What one scripted gateway does and what it saw.
#[derive(Default)]
struct Script {
    /// One entry per Subscribe call: the events to stream; an `Err` ends the stream with it,
    /// otherwise the stream stays open (quiet, like a live stream with nothing to say).
    streams: VecDeque<Vec<Result<v1::PushEvent, Status>>>,
    /// The cursors each Subscribe named.
    cursors_seen: Vec<Vec<(ConvId, u64)>>,
    /// The log History serves.
    log: Vec<v1::Message>,
    /// Failures the next Sends return, in order, before one succeeds.
    send_failures: VecDeque<Status>,
    /// The client message id of every Send.
    send_ids: Vec<Vec<u8>>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Script>>);

impl Fake {
    fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0
            .lock()
            .expect("no test thread panicked holding the script")
    }
}

fn api_error(code: ErrorCode, grpc: tonic::Code, retry_after: Option<u64>) -> Status {
    let mut s = Status::new(grpc, format!("{code}: scripted"));
    s.metadata_mut()
        .insert("bongsu-code", code.as_str().parse().expect("ASCII"));
    if let Some(secs) = retry_after {
        s.metadata_mut()
            .insert("retry-after", secs.to_string().parse().expect("ASCII"));
    }
    s
}

const CONV: u128 = 0xc0;

fn msg(seq: u64) -> v1::Message {
    v1::Message {
        conv_id: ConvId::from_u128(CONV).0.to_vec(),
        seq,
        sender: UserId::from_u128(1).0.to_vec(),
        device: vec![2; 16],
        client_msg_id: vec![seq as u8; 16],
        kind: v1::MessageKind::Text as i32,
        body: format!("m{seq}").into_bytes(),
        sent_at_ms: 0,
    }
}

fn push(seq: u64) -> Result<v1::PushEvent, Status> {
    Ok(v1::PushEvent {
        event: Some(v1::push_event::Event::Message(msg(seq))),
    })
}

fn heartbeat() -> Result<v1::PushEvent, Status> {
    Ok(v1::PushEvent {
        event: Some(v1::push_event::Event::HeartbeatMs(1)),
    })
}

fn unimplemented<T>() -> Reply<T> {
    Err(Status::unimplemented("not scripted"))
}

#[tonic::async_trait]
impl Auth for Fake {
    async fn sign_up(&self, _: Request<v1::SignUpRequest>) -> Reply<v1::Session> {
        unimplemented()
    }
    async fn sign_in(&self, _: Request<v1::SignInRequest>) -> Reply<v1::Session> {
        unimplemented()
    }
    async fn refresh(&self, _: Request<v1::RefreshRequest>) -> Reply<v1::Session> {
        unimplemented()
    }
    async fn list_devices(
        &self,
        _: Request<v1::ListDevicesRequest>,
    ) -> Reply<v1::ListDevicesReply> {
        unimplemented()
    }
    async fn revoke_device(
        &self,
        _: Request<v1::RevokeDeviceRequest>,
    ) -> Reply<v1::RevokeDeviceReply> {
        unimplemented()
    }
    async fn server_info(&self, _: Request<v1::ServerInfoRequest>) -> Reply<v1::ServerInfoReply> {
        Ok(Response::new(v1::ServerInfoReply::default()))
    }
}

#[tonic::async_trait]
impl Messenger for Fake {
    async fn lookup_users(
        &self,
        _: Request<v1::LookupUsersRequest>,
    ) -> Reply<v1::LookupUsersReply> {
        unimplemented()
    }
    async fn create_conversation(
        &self,
        _: Request<v1::CreateConversationRequest>,
    ) -> Reply<v1::Conversation> {
        unimplemented()
    }
    async fn get_conversation(
        &self,
        _: Request<v1::GetConversationRequest>,
    ) -> Reply<v1::Conversation> {
        unimplemented()
    }
    async fn change_members(
        &self,
        _: Request<v1::ChangeMembersRequest>,
    ) -> Reply<v1::Conversation> {
        unimplemented()
    }
    async fn list_conversations(
        &self,
        _: Request<v1::ListConversationsRequest>,
    ) -> Reply<v1::ListConversationsReply> {
        unimplemented()
    }
    async fn send(&self, r: Request<v1::SendRequest>) -> Reply<v1::SendReply> {
        let mut s = self.script();
        s.send_ids.push(r.into_inner().client_msg_id);
        match s.send_failures.pop_front() {
            Some(e) => Err(e),
            None => Ok(Response::new(v1::SendReply {
                seq: 7,
                duplicate: s.send_ids.len() > 1,
            })),
        }
    }
    async fn history(&self, r: Request<v1::HistoryRequest>) -> Reply<v1::HistoryReply> {
        let r = r.into_inner();
        let s = self.script();
        let messages: Vec<_> = s
            .log
            .iter()
            .filter(|m| m.seq > r.after)
            .take(r.limit.max(1) as usize)
            .cloned()
            .collect();
        Ok(Response::new(v1::HistoryReply {
            messages,
            last_seq: s.log.last().map_or(0, |m| m.seq),
        }))
    }
    async fn mark_read(&self, _: Request<v1::MarkReadRequest>) -> Reply<v1::MarkReadReply> {
        unimplemented()
    }
    async fn sync(&self, _: Request<v1::SyncRequest>) -> Reply<v1::SyncReply> {
        unimplemented()
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<v1::PushEvent, Status>> + Send>>;

    async fn subscribe(&self, r: Request<v1::SubscribeRequest>) -> Reply<Self::SubscribeStream> {
        let cursors = r
            .into_inner()
            .cursors
            .into_iter()
            .map(|c| {
                let conv = ConvId::try_from(c.conv_id.as_slice()).expect("the SDK sends valid ids");
                (conv, c.seq)
            })
            .collect();
        let mut s = self.script();
        s.cursors_seen.push(cursors);
        let items = s.streams.pop_front().unwrap_or_default();
        let ends = items.iter().any(|i| i.is_err());
        let stream = futures::stream::iter(items);
        Ok(Response::new(if ends {
            Box::pin(stream)
        } else {
            Box::pin(stream.chain(futures::stream::pending()))
        }))
    }
}

/// Serves a fake gateway on a free loopback port; returns its URL.
async fn serve(fake: Fake) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a free port");
    let url = format!("http://{}", listener.local_addr().expect("a bound address"));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AuthServer::new(fake.clone()))
            .add_service(MessengerServer::new(fake))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    url
}

fn session() -> Session {
    Session {
        user_id: UserId::from_u128(1),
        handle: "tester".into(),
        device_id: bongsu_client::DeviceId::from_u128(2),
        access_token: "token".into(),
        access_expires_at_ms: u64::MAX,
        refresh_token: "refresh".into(),
    }
}

fn quick() -> Options {
    Options {
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(50),
        call_deadline: Duration::from_secs(5),
        ..Options::default()
    }
}

#[tokio::test]
async fn a_subscription_resumes_on_the_next_gateway_without_gap_or_duplicate() {
    let conv = ConvId::from_u128(CONV);
    // Gateway A streams 1..=3 and then dies mid-stream (no bongsu-code: a transport failure).
    let a = Fake::default();
    a.script().streams.push_back(vec![
        push(1),
        push(2),
        heartbeat(),
        push(3),
        Err(Status::unavailable("reset")),
    ]);
    // Gateway B replays 2 and 3 again, then skips 5: the SDK drops the replay and fills 5
    // from History.
    let b = Fake::default();
    b.script()
        .streams
        .push_back(vec![push(2), push(3), push(4), push(6), push(7)]);
    b.script().log = (1..=7).map(msg).collect();
    let urls = vec![serve(a.clone()).await, serve(b.clone()).await];
    let client = Client::connect_with(urls.clone(), quick())
        .await
        .expect("connect")
        .with_session(session());

    let mut sub = client.subscribe_from([(conv, 0)]);
    let mut seqs = Vec::new();
    while seqs.len() < 7 {
        let ev = tokio::time::timeout(Duration::from_secs(5), sub.next())
            .await
            .expect("events keep coming")
            .expect("the subscription goes on")
            .expect("no fatal error");
        if let Event::Message(m) = ev {
            assert_eq!(m.body, format!("m{}", m.seq).into_bytes());
            seqs.push(m.seq);
        }
    }
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
    assert_eq!(sub.reconnects(), 1);
    assert_eq!(sub.endpoint(), urls[1]);
    assert_eq!(sub.duplicates_dropped(), 2);
    assert_eq!(sub.gaps_filled(), 1);
    assert_eq!(sub.positions(), vec![(conv, 7)]);
    // B was asked to resume after the last seq A delivered.
    assert_eq!(b.script().cursors_seen, vec![vec![(conv, 3)]]);
    assert_eq!(a.script().cursors_seen, vec![vec![(conv, 0)]]);
}

#[tokio::test]
async fn a_send_is_retried_with_the_same_id_and_honours_retry_after() {
    let a = Fake::default();
    a.script().send_failures = VecDeque::from([
        api_error(ErrorCode::NotLeader, tonic::Code::Unavailable, None),
        api_error(
            ErrorCode::ResourceExhausted,
            tonic::Code::ResourceExhausted,
            Some(1),
        ),
    ]);
    let client = Client::connect_with(vec![serve(a.clone()).await], quick())
        .await
        .expect("connect")
        .with_session(session());
    let start = Instant::now();
    let sent = client
        .send_text(ConvId::from_u128(CONV), "hello")
        .await
        .expect("the third attempt succeeds");
    assert!(start.elapsed() >= Duration::from_secs(1), "waited as asked");
    assert_eq!(sent.seq, 7);
    let ids = a.script().send_ids.clone();
    assert_eq!(ids.len(), 3);
    assert!(
        ids.iter().all(|id| *id == sent.client_msg_id.0.to_vec()),
        "one id for every attempt"
    );
}

#[tokio::test]
async fn a_dead_gateway_is_skipped_and_fatal_errors_are_not_retried() {
    // Nothing listens on the first endpoint.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("address"))
    };
    let live = Fake::default();
    live.script().send_failures = VecDeque::from([api_error(
        ErrorCode::NotMember,
        tonic::Code::PermissionDenied,
        None,
    )]);
    let client = Client::connect_with(vec![dead, serve(live.clone()).await], quick())
        .await
        .expect("the second gateway answers")
        .with_session(session());
    let err = client
        .send_text(ConvId::from_u128(CONV), "hello")
        .await
        .expect_err("NOT_MEMBER is final");
    assert_eq!(err.code(), Some(ErrorCode::NotMember));
    assert_eq!(live.script().send_ids.len(), 1, "not retried");
}

#[tokio::test]
async fn calls_without_a_session_say_so() {
    let client = Client::connect_with(vec![serve(Fake::default()).await], quick())
        .await
        .expect("connect");
    let err = client
        .list_conversations()
        .await
        .expect_err("not signed in");
    assert!(matches!(err, bongsu_client::Error::NotSignedIn), "{err}");
    assert_eq!(err.code(), None);
}
