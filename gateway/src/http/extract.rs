//! Extractors that reject with [`ApiError`], so axum's plain-text rejections never reach a
//! client: JSON bodies, query strings, ids in the path, the caller's token, the client address.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bongsu_proto::model::{ConvId, DeviceId};
use bongsu_proto::ErrorCode;
use serde::de::DeserializeOwned;

use super::json::parse_id;
use crate::auth::Caller;
use crate::errors::ApiError;
use crate::service::Gateway;

/// A JSON request body. Malformed JSON, a missing `Content-Type: application/json`, missing
/// fields and unknown enum names are `INVALID_ARGUMENT`; a body over the limit is
/// `MESSAGE_TOO_LARGE`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(ApiJson(v)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match &r {
        _ if r.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::MessageTooLarge,
            "the request body is larger than this gateway accepts",
        ),
        JsonRejection::MissingJsonContentType(_) => {
            ApiError::invalid("the body must be JSON, sent with Content-Type: application/json")
        }
        // serde's message names the field and what was wrong with it ("missing field
        // `handle`", "unknown variant `fax`"); it never echoes string values back.
        _ => ApiError::invalid(r.body_text()),
    }
}

/// Query parameters; anything that does not parse is `INVALID_ARGUMENT`.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|r| ApiError::invalid(r.body_text()))
    }
}

async fn path_param(parts: &mut Parts, state: &Arc<Gateway>) -> Result<String, ApiError> {
    Path::<String>::from_request_parts(parts, state)
        .await
        .map(|Path(s)| s)
        .map_err(|r| ApiError::invalid(r.body_text()))
}

/// The conversation id in `/v1/conversations/{conv_id}/…`, as the bytes the service takes.
pub struct ConvPath(pub Vec<u8>);

impl FromRequestParts<Arc<Gateway>> for ConvPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let s = path_param(parts, gw).await?;
        Ok(ConvPath(parse_id::<ConvId>(&s, "conv_id")?))
    }
}

/// The device id in `/v1/devices/{device_id}`.
pub struct DevicePath(pub Vec<u8>);

impl FromRequestParts<Arc<Gateway>> for DevicePath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let s = path_param(parts, gw).await?;
        Ok(DevicePath(parse_id::<DeviceId>(&s, "device_id")?))
    }
}

/// The address the request came from (the TCP peer; the gateway is meant to be reached
/// directly or through a TCP load balancer that keeps addresses).
pub fn client_ip(parts: &Parts) -> Option<IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip())
}

/// A verified caller: `Authorization: Bearer <access token>` checked by
/// [`Gateway::authenticate`], then the caller's rate limit. Records `user` and `device` on the
/// request's span.
pub struct Authed(pub Caller);

impl FromRequestParts<Arc<Gateway>> for Authed {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        let token = bearer_token(parts)?;
        let caller = gw.authenticate(token).await?;
        let span = tracing::Span::current();
        span.record("user", tracing::field::display(caller.user));
        span.record("device", tracing::field::display(caller.device));
        gw.limits.check_user(&caller.user)?;
        Ok(Authed(caller))
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthenticated("missing Authorization: Bearer <access token>"))?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::unauthenticated("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(ApiError::unauthenticated(
            "the Authorization header must be `Bearer <access token>`",
        )),
    }
}

/// A sign-up, sign-in or refresh attempt: counted against the client address's (low) auth
/// limit before the body is even read, so password guessing stays slow.
pub struct AuthAttempt;

impl FromRequestParts<Arc<Gateway>> for AuthAttempt {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, gw: &Arc<Gateway>) -> Result<Self, ApiError> {
        if let Some(ip) = client_ip(parts) {
            gw.limits.check_auth(ip)?;
        }
        Ok(AuthAttempt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(auth: Option<&str>) -> Parts {
        let mut b = axum::http::Request::builder();
        if let Some(a) = auth {
            b = b.header(header::AUTHORIZATION, a);
        }
        b.body(()).expect("a valid request").into_parts().0
    }

    #[test]
    fn bearer_tokens_are_taken_from_the_authorization_header() {
        assert_eq!(bearer_token(&parts(Some("Bearer abc.def"))), Ok("abc.def"));
        assert_eq!(bearer_token(&parts(Some("bearer  abc "))), Ok("abc"));
        for bad in [
            None,
            Some("abc"),
            Some("Basic abc"),
            Some("Bearer "),
            Some("Bearer"),
        ] {
            let err = bearer_token(&parts(bad)).expect_err("rejected");
            assert_eq!(err.code, ErrorCode::Unauthenticated, "{bad:?}");
        }
    }
}
