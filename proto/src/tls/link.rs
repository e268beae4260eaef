//! Serving and dialing through [`Security`]: TLS with client certificates, or plain text for a
//! local development cluster that asked for it.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::Connected;
use tonic::transport::{Channel, Endpoint, Uri};

use super::credentials::Credentials;
use super::identity::{role_of, Role};

/// A TLS handshake that takes longer is dropped: a stranger holding sockets open must not
/// hold the accept loop's slots.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How a process talks to the rest of the cluster.
#[derive(Clone)]
pub enum Security {
    /// Mutual TLS with these credentials.
    Mutual(Arc<Credentials>),
    /// Plain text, no peer identity: only for a local development cluster, switched on by
    /// name (`insecure_plaintext`).
    Plaintext,
}

/// Who is on the other end of an accepted connection: the request extension every handler
/// and [`super::Authorize`] reads.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    pub remote: Option<SocketAddr>,
    /// The role the peer's certificate names; `None` on a plain-text server, which knows
    /// nothing about its callers.
    pub role: Option<Role>,
}

/// The peer of a request, as the accepting server established it.
pub fn peer<T>(req: &tonic::Request<T>) -> Option<&PeerInfo> {
    req.extensions().get::<PeerInfo>()
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// One accepted connection, TLS already done.
pub struct Conn {
    io: Box<dyn Io>,
    pub(super) info: PeerInfo,
}

impl Connected for Conn {
    type ConnectInfo = PeerInfo;
    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Completes the server side of one connection: the handshake, then the role its
/// certificate names. `None` when the peer is refused (logged at debug: strangers knocking
/// are not the operator's problem, and a flood of them must not flood the log).
async fn accept(acceptor: TlsAcceptor, tcp: TcpStream, remote: SocketAddr) -> Option<Conn> {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake refused");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let role = match tls.get_ref().1.peer_certificates().map(|c| c.first()) {
        Some(Some(cert)) => match role_of(cert) {
            Ok(role) => role,
            Err(e) => {
                tracing::debug!(%remote, error = %e, "peer certificate names no role");
                return None;
            }
        },
        _ => return None,
    };
    Some(Conn {
        io: Box::new(tls),
        info: PeerInfo {
            remote: Some(remote),
            role: Some(role),
        },
    })
}

impl Security {
    /// The security of a tool acting as `role`: the credentials in `dir`, or plain text when
    /// asked for by name; neither is an error that says what to pass.
    pub fn for_tool(
        dir: Option<&std::path::Path>,
        insecure_plaintext: bool,
        role: Role,
    ) -> Result<Security, super::TlsError> {
        match (dir, insecure_plaintext) {
            (Some(dir), false) => Ok(Security::Mutual(Credentials::load(dir, Some(role))?)),
            (None, true) => Ok(Security::Plaintext),
            (Some(_), true) => Err(super::TlsError::Missing(
                "give either a TLS directory or --insecure-plaintext, not both".into(),
            )),
            (None, false) => Err(super::TlsError::Missing(format!(
                "a TLS directory is required (--tls-dir or BONGSU_TLS_DIR): ca.pem, and a cert.pem naming {} with its key.pem",
                role.server_name()
            ))),
        }
    }

    pub fn is_plaintext(&self) -> bool {
        matches!(self, Security::Plaintext)
    }

    /// The role this process's certificate names (`None` in plain text).
    pub fn role(&self) -> Option<Role> {
        match self {
            Security::Mutual(c) => Some(c.role()),
            Security::Plaintext => None,
        }
    }

    /// Accepted connections of `listener`, ready for `serve_with_incoming`. Each TLS
    /// handshake runs on its own task, so a slow one delays no other connection.
    pub fn incoming(&self, listener: TcpListener) -> ReceiverStream<io::Result<Conn>> {
        let (tx, rx) = mpsc::channel(64);
        let security = self.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, remote) = tokio::select! {
                    _ = tx.closed() => return,
                    r = listener.accept() => match r {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: wait instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let _ = tcp.set_nodelay(true);
                match &security {
                    Security::Plaintext => {
                        let conn = Conn {
                            io: Box::new(tcp),
                            info: PeerInfo {
                                remote: Some(remote),
                                role: None,
                            },
                        };
                        if tx.send(Ok(conn)).await.is_err() {
                            return;
                        }
                    }
                    Security::Mutual(creds) => {
                        let acceptor = TlsAcceptor::from(creds.server());
                        let tx = tx.clone();
                        tokio::spawn(async move {
                            if let Some(conn) = accept(acceptor, tcp, remote).await {
                                let _ = tx.send(Ok(conn)).await;
                            }
                        });
                    }
                }
            }
        });
        ReceiverStream::new(rx)
    }

    /// Binds `addr` and returns its accepted connections (see [`Security::incoming`]).
    pub async fn bind(&self, addr: SocketAddr) -> io::Result<ReceiverStream<io::Result<Conn>>> {
        Ok(self.incoming(TcpListener::bind(addr).await?))
    }

    /// The endpoint for `addr` (`host:port`), to configure before [`Security::channel`].
    pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
        Endpoint::from_shared(format!("http://{addr}"))
    }

    /// A lazily connecting channel to `ep` whose server's certificate must carry
    /// `server_name` (see [`Role::server_name`] and [`Role::any_node`]).
    pub fn channel(&self, ep: Endpoint, server_name: &str) -> Channel {
        match self {
            Security::Plaintext => ep.tcp_nodelay(true).connect_lazy(),
            Security::Mutual(creds) => {
                ep.connect_with_connector_lazy(connector(creds, server_name))
            }
        }
    }

    /// As [`Security::channel`], connecting now.
    pub async fn connect(
        &self,
        ep: Endpoint,
        server_name: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        match self {
            Security::Plaintext => ep.tcp_nodelay(true).connect().await,
            Security::Mutual(creds) => {
                ep.connect_with_connector(connector(creds, server_name))
                    .await
            }
        }
    }
}

type Connecting =
    Pin<Box<dyn std::future::Future<Output = io::Result<TokioIo<Box<dyn Io>>>> + Send>>;

fn connector(
    creds: &Arc<Credentials>,
    server_name: &str,
) -> impl tower::Service<Uri, Response = TokioIo<Box<dyn Io>>, Error = io::Error, Future = Connecting>
       + Clone
       + Send
       + 'static {
    let creds = creds.clone();
    let server_name = server_name.to_string();
    tower::service_fn(move |uri: Uri| -> Connecting {
        let creds = creds.clone();
        let server_name = server_name.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "no host in the address")
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from(server_name)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = TlsConnector::from(creds.client())
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(Box::new(tls) as Box<dyn Io>))
        })
    })
}
