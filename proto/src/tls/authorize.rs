//! Refuses a request whose peer's role may not call its method, before any handler runs.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::identity::Role;
use super::link::PeerInfo;
use crate::model::{ErrorCode, CODE_KEY};

/// Whether `role` may call the gRPC method at `path` (`/package.Service/Method`).
pub type Policy = Arc<dyn Fn(&str, &Role) -> bool + Send + Sync>;

/// A tower layer for a tonic server fed by [`super::Security::incoming`].
#[derive(Clone)]
pub struct Authorize {
    policy: Policy,
}

impl Authorize {
    pub fn new(policy: impl Fn(&str, &Role) -> bool + Send + Sync + 'static) -> Authorize {
        Authorize {
            policy: Arc::new(policy),
        }
    }
}

impl<S> tower::Layer<S> for Authorize {
    type Service = AuthorizeService<S>;
    fn layer(&self, inner: S) -> AuthorizeService<S> {
        AuthorizeService {
            inner,
            policy: self.policy.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthorizeService<S> {
    inner: S,
    policy: Policy,
}

fn refuse(code: ErrorCode, message: String) -> tonic::Status {
    let mut status = tonic::Status::new(code.grpc_code(), message);
    if let Ok(v) = code.as_str().parse() {
        status.metadata_mut().insert(CODE_KEY, v);
    }
    status
}

/// Why a request is refused, if it is. A server not fed through [`super::Security`] knows
/// nothing of its peer and refuses everything; a plain-text one (a development cluster that
/// asked for it) allows everything.
fn verdict(policy: &Policy, path: &str, peer: Option<&PeerInfo>) -> Option<tonic::Status> {
    match peer {
        None => Some(refuse(
            ErrorCode::Unauthenticated,
            "the server does not know who is calling".into(),
        )),
        Some(PeerInfo { role: None, .. }) => None,
        Some(PeerInfo {
            role: Some(role), ..
        }) => (!policy(path, role)).then(|| {
            refuse(
                ErrorCode::PermissionDenied,
                format!("a {} certificate may not call {path}", kind(role)),
            )
        }),
    }
}

fn kind(role: &Role) -> &'static str {
    match role {
        Role::Node(_) => "node",
        Role::Gateway => "gateway",
        Role::Operator => "operator",
    }
}

impl<S, B> tower::Service<http::Request<B>> for AuthorizeService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match verdict(
            &self.policy,
            req.uri().path(),
            req.extensions().get::<PeerInfo>(),
        ) {
            Some(status) => {
                tracing::debug!(path = req.uri().path(), error = %status.message(), "request refused");
                Box::pin(std::future::ready(Ok(status.into_http())))
            }
            None => Box::pin(self.inner.call(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn only_gateways() -> Policy {
        Arc::new(|_: &str, r: &Role| *r == Role::Gateway)
    }

    fn info(role: Option<Role>) -> PeerInfo {
        PeerInfo { remote: None, role }
    }

    #[test]
    fn the_policy_decides_for_a_known_peer() {
        let p = only_gateways();
        assert!(verdict(&p, "/x.Y/Z", Some(&info(Some(Role::Gateway)))).is_none());
        let no = verdict(&p, "/x.Y/Z", Some(&info(Some(Role::Operator)))).unwrap();
        assert_eq!(ErrorCode::of_status(&no), Some(ErrorCode::PermissionDenied));
        assert!(no.message().contains("operator"));
    }

    #[test]
    fn an_unknown_peer_is_refused_and_plain_text_allows() {
        let p = only_gateways();
        let no = verdict(&p, "/x.Y/Z", None).unwrap();
        assert_eq!(ErrorCode::of_status(&no), Some(ErrorCode::Unauthenticated));
        assert!(verdict(&p, "/x.Y/Z", Some(&info(None))).is_none());
    }
}
