//! Rate limits per user and per client IP (governor), answered with `RESOURCE_EXHAUSTED` and a
//! retry delay; and the tower layers every front end shares (timeout, concurrency limit, load
//! shedding).

use std::net::IpAddr;

use bongsu_proto::model::UserId;

use crate::config::Config;
use crate::errors::Result;

pub struct RateLimits {}

impl RateLimits {
    pub fn new(config: &Config) -> Self {
        let _ = config;
        RateLimits {}
    }

    /// One request by `user`; `RESOURCE_EXHAUSTED` with `retry_after` when over the limit.
    pub fn check_user(&self, user: &UserId) -> Result<()> {
        let _ = user;
        Ok(())
    }

    /// One request from `ip`.
    pub fn check_ip(&self, ip: IpAddr) -> Result<()> {
        let _ = ip;
        Ok(())
    }

    /// One sign-up, sign-in or refresh attempt from `ip` (a much lower limit).
    pub fn check_auth(&self, ip: IpAddr) -> Result<()> {
        let _ = ip;
        Ok(())
    }
}
