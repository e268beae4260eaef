//! The HTTP/JSON API and the WebSocket push stream against a real deployment: the whole flow,
//! live delivery and resume, authorization, every kind of bad input (status, stable code, and
//! that nothing was stored), token expiry and rate limits.
//!
//! Three deployments: defaults (`http_api_*`), tight rate limits, and one-second access tokens.

mod client;
mod flow;
mod limits;
mod refusals;

use std::time::Duration;

use anyhow::Result;

use crate::bounded;
use crate::harness::{Env, Opts};

#[tokio::test]
async fn http_api_whole_flow_push_authorization_and_bad_input() -> Result<()> {
    let env = Env::start("http_api", Opts::default()).await?;
    bounded(Duration::from_secs(240), flow::whole_flow(&env)).await?;
    env.pass();
    Ok(())
}

#[tokio::test]
async fn http_rate_limits() -> Result<()> {
    let opts = Opts {
        gateway_args: vec!["--user-rate=2".into(), "--auth-rate-per-min=3".into()],
        ..Opts::default()
    };
    let env = Env::start("http_rate_limits", opts).await?;
    bounded(Duration::from_secs(120), limits::rate_limits(&env)).await?;
    env.pass();
    Ok(())
}

#[tokio::test]
async fn http_expired_tokens() -> Result<()> {
    let opts = Opts {
        gateway_args: vec!["--access-ttl-secs=1".into()],
        ..Opts::default()
    };
    let env = Env::start("http_expired_tokens", opts).await?;
    bounded(Duration::from_secs(60), limits::expired_tokens(&env)).await?;
    env.pass();
    Ok(())
}
