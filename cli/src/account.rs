//! `bongsu signup` and `bongsu login`, the gateway list every chat command shares, and the saved
//! session (JSON, mode 0600, in `$BONGSU_SESSION` or `~/.config/bongsu/session.json`).

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bongsu_client::{Client, DeviceInfo, DeviceKind, Options, Session};

/// The gateways of `bongsu run`, one per datacenter.
pub const LOCAL_GATEWAYS: [&str; 3] = [
    "http://127.0.1.1:8081",
    "http://127.0.2.1:8081",
    "http://127.0.3.1:8081",
];

/// Where to reach the cluster and where this terminal's session is kept.
#[derive(clap::Args, Clone, Debug)]
pub struct Conn {
    /// A gateway's gRPC address (repeat, or separate with commas, for several datacenters);
    /// by default the gateways of `bongsu run`.
    #[arg(long = "gateway", env = "BONGSU_GATEWAY", value_delimiter = ',')]
    pub gateways: Vec<String>,
    /// The saved session; by default ~/.config/bongsu/session.json.
    #[arg(long, env = "BONGSU_SESSION")]
    pub session: Option<PathBuf>,
}

impl Conn {
    /// Gateway URLs, with `http://` added where no scheme was given.
    pub fn urls(&self) -> Vec<String> {
        if self.gateways.is_empty() {
            return LOCAL_GATEWAYS.iter().map(|s| s.to_string()).collect();
        }
        self.gateways
            .iter()
            .map(|g| g.trim())
            .filter(|g| !g.is_empty())
            .map(|g| {
                if g.contains("://") {
                    g.to_string()
                } else {
                    format!("http://{g}")
                }
            })
            .collect()
    }

    pub fn session_path(&self) -> anyhow::Result<PathBuf> {
        if let Some(p) = &self.session {
            return Ok(p.clone());
        }
        let base = match std::env::var_os("XDG_CONFIG_HOME") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => PathBuf::from(
                std::env::var_os("HOME").context("find the home directory ($HOME is not set)")?,
            )
            .join(".config"),
        };
        Ok(base.join("bongsu").join("session.json"))
    }

    pub async fn connect(&self) -> anyhow::Result<Client> {
        let urls = self.urls();
        // A person at a terminal would rather hear "cannot connect" soon than have the SDK
        // retry for its default half a minute.
        let opts = Options {
            call_deadline: Duration::from_secs(15),
            ..Options::default()
        };
        Client::connect_with(urls.clone(), opts)
            .await
            .with_context(|| format!("connect to a gateway (tried {})", urls.join(", ")))
    }

    /// A client signed in with the saved session, which it saves again whenever the tokens
    /// are refreshed (the old refresh token stops working at that moment).
    pub async fn signed_in(&self) -> anyhow::Result<Client> {
        let path = self.session_path()?;
        let session = load(&path)?;
        let client = self.connect().await?.with_session(session);
        client.on_session_change(move |s| {
            if let Err(e) = save(&path, s) {
                eprintln!("warning: could not save the refreshed session: {e:#}");
            }
        });
        Ok(client)
    }
}

#[derive(clap::Args)]
pub struct AuthArgs {
    /// Your handle: 3 to 32 of a-z, 0-9, '_' and '.'.
    pub handle: String,
    /// The password; asked for on the terminal when not given here.
    #[arg(long, env = "BONGSU_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// How this device shows up in your device list.
    #[arg(long, default_value = "bongsu CLI")]
    pub device_name: String,
    #[command(flatten)]
    pub conn: Conn,
}

pub async fn signup(a: AuthArgs) -> anyhow::Result<()> {
    let password = password(&a, true)?;
    let client = a.conn.connect().await?;
    let device = DeviceInfo::new(DeviceKind::Pc, a.device_name.clone());
    let s = client
        .sign_up(&a.handle, &password, device)
        .await
        .with_context(|| format!("sign up as {}", a.handle))?;
    finish(&a.conn, &s, "signed up")
}

pub async fn login(a: AuthArgs) -> anyhow::Result<()> {
    let password = password(&a, false)?;
    let client = a.conn.connect().await?;
    let device = DeviceInfo::new(DeviceKind::Pc, a.device_name.clone());
    let s = client
        .sign_in(&a.handle, &password, device)
        .await
        .with_context(|| format!("sign in as {}", a.handle))?;
    finish(&a.conn, &s, "signed in")
}

fn finish(conn: &Conn, s: &Session, what: &str) -> anyhow::Result<()> {
    let path = conn.session_path()?;
    save(&path, s)?;
    println!(
        "{what} as {} (user {}), session saved in {}",
        s.handle,
        s.user_id,
        path.display()
    );
    Ok(())
}

fn password(a: &AuthArgs, twice: bool) -> anyhow::Result<String> {
    if let Some(p) = &a.password {
        return Ok(p.clone());
    }
    let p = rpassword::prompt_password("password: ").context("read the password")?;
    if twice {
        let again = rpassword::prompt_password("again: ").context("read the password")?;
        if again != p {
            bail!("the two passwords differ");
        }
    }
    Ok(p)
}

/// Reads a saved session.
pub fn load(path: &Path) -> anyhow::Result<Session> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "read the session {} (sign in first: bongsu login <handle>)",
            path.display()
        )
    })?;
    serde_json::from_str(&text).with_context(|| format!("parse the session {}", path.display()))
}

/// Saves a session readable by its owner only: it holds the tokens. The file is written
/// beside the old one and renamed over it, so a crash never leaves half a session.
pub fn save(path: &Path, s: &Session) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.exists() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restrict {}", dir.display()))?;
        }
    }
    let json = serde_json::to_vec_pretty(s).context("encode the session")?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("create {}", tmp.display()))?;
    // `mode` only applies to a new file; an old temporary file may have had other bits.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restrict {}", tmp.display()))?;
    f.write_all(&json)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("move the session to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bongsu_client::{DeviceId, UserId};

    #[test]
    fn sessions_are_saved_private_and_read_back() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("cfg/bongsu/session.json");
        let s = Session {
            user_id: UserId::from_u128(7),
            handle: "jisoo".into(),
            device_id: DeviceId::from_u128(8),
            access_token: "a".into(),
            access_expires_at_ms: 9,
            refresh_token: "r".into(),
        };
        save(&path, &s).expect("save");
        save(&path, &s).expect("save over an existing session");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load(&path).expect("load"), s);
    }

    #[test]
    fn gateway_urls_get_a_scheme() {
        let c = Conn {
            gateways: vec![
                "127.0.1.1:8081".into(),
                "https://gw.example:443".into(),
                " ".into(),
            ],
            session: None,
        };
        assert_eq!(
            c.urls(),
            vec!["http://127.0.1.1:8081", "https://gw.example:443"]
        );
        let none = Conn {
            gateways: vec![],
            session: None,
        };
        assert_eq!(none.urls().len(), 3);
    }
}
