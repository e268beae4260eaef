//! A signed-in device's credentials, in a form an application can save and load.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bongsu_proto::model::{DeviceId, UserId};
use bongsu_proto::v1;
use serde::{Deserialize, Serialize};

use crate::errors::{Error, Result};

/// Refresh this long before the access token expires, so that a call made just before expiry
/// does not arrive just after it (clocks differ, requests take time).
pub const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// Who is signed in on this device and with what tokens.
///
/// The refresh token works once: after every refresh the SDK holds a new one, so an application
/// that saves the session must save it again when it changes (see
/// `Client::on_session_change`).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    #[serde(with = "hex_id")]
    pub user_id: UserId,
    pub handle: String,
    #[serde(with = "hex_id")]
    pub device_id: DeviceId,
    pub access_token: String,
    pub access_expires_at_ms: u64,
    pub refresh_token: String,
}

impl Session {
    /// Whether the access token should be refreshed before it is used at `now`.
    pub fn needs_refresh(&self, now: SystemTime) -> bool {
        let now_ms = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        now_ms + REFRESH_MARGIN.as_millis() >= u128::from(self.access_expires_at_ms)
    }
}

/// Tokens are secrets: they are never printed, not even in debug output.
impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user_id", &self.user_id)
            .field("handle", &self.handle)
            .field("device_id", &self.device_id)
            .field("access_expires_at_ms", &self.access_expires_at_ms)
            .finish_non_exhaustive()
    }
}

impl TryFrom<v1::Session> for Session {
    type Error = Error;

    fn try_from(s: v1::Session) -> Result<Self> {
        if s.access_token.is_empty() {
            return Err(Error::missing("access_token"));
        }
        Ok(Session {
            user_id: UserId::try_from(s.user_id.as_slice())?,
            handle: s.handle,
            device_id: DeviceId::try_from(s.device_id.as_slice())?,
            access_token: s.access_token,
            access_expires_at_ms: s.access_expires_at_ms,
            refresh_token: s.refresh_token,
        })
    }
}

/// Ids as 32 hex digits in saved sessions, the way people see them everywhere else.
mod hex_id {
    use std::fmt::Display;
    use std::str::FromStr;

    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn serialize<T: Display, S: Serializer>(id: &T, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(id)
    }

    pub fn deserialize<'de, T, D>(d: D) -> Result<T, D::Error>
    where
        T: FromStr,
        T::Err: Display,
        D: Deserializer<'de>,
    {
        let s = String::deserialize(d)?;
        s.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(expires_ms: u64) -> Session {
        Session {
            user_id: UserId::from_u128(0xab),
            handle: "jisoo".into(),
            device_id: DeviceId::from_u128(0xcd),
            access_token: "secret-access".into(),
            access_expires_at_ms: expires_ms,
            refresh_token: "secret-refresh".into(),
        }
    }

    #[test]
    fn round_trips_through_json_with_hex_ids() {
        let s = session(123);
        let json = serde_json::to_string(&s).expect("a session serializes");
        assert!(json.contains(&format!("\"{:032x}\"", 0xab)), "{json}");
        let back: Session = serde_json::from_str(&json).expect("and deserializes");
        assert_eq!(back, s);
        assert!(serde_json::from_str::<Session>(&json.replace("000000ab", "zz")).is_err());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let text = format!("{:?}", session(1));
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn refreshes_within_the_margin_before_expiry() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let at = |d: Duration| (now + d).duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(!session(at(Duration::from_secs(600))).needs_refresh(now));
        assert!(session(at(Duration::from_secs(30))).needs_refresh(now));
        assert!(session(at(Duration::ZERO)).needs_refresh(now));
    }
}
