//! Two people chat through the web client, each in a headless Chromium driven over WebDriver
//! (chromedriver + fantoccini): A on the gateway of dc1, B on the gateway of dc2. Both sign up
//! through the page; A starts a direct chat with B's handle and sends; B sees the message and
//! an unread badge appear live, opens the chat and replies; A sees the reply live.
//!
//! Needs `/usr/bin/chromium`, `/usr/bin/chromedriver` and a CJK font (`make test` installs
//! chromium, chromium-driver and fonts-noto-cjk as root on Debian/Ubuntu). Screenshots of both
//! windows, Korean included, are written to the test's `out_dir`.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bongsu_testkit::process;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::bounded;
use crate::harness::{Env, Opts};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one thing may take to show up on a page (a live message crosses datacenters).
const SHOW_UP: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_people_chat_live_across_datacenters() -> Result<()> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        if !Path::new(bin).exists() {
            bail!(
                "{bin} is missing: the browser test needs Chromium and chromedriver; run `make test` \
                 (as root it installs the Debian packages chromium and chromium-driver)"
            );
        }
    }
    let env = Env::start("browser", Opts::default()).await?;
    bounded(Duration::from_secs(180), async move {
        let driver = Chromedriver::start(&env.out_dir.join("chromedriver.log"))?;
        driver.wait_ready(Duration::from_secs(20)).await?;
        let (a, _a_profile) = driver.session().await.context("open browser A")?;
        let b = driver.session().await.context("open browser B");
        let (b, _b_profile) = match b {
            Ok(s) => s,
            Err(e) => {
                let _ = tokio::time::timeout(Duration::from_secs(10), a.close()).await;
                return Err(e);
            }
        };

        // The scenario has its own limit so that the browsers are always closed in time.
        let limit = Duration::from_secs(110);
        let outcome = match tokio::time::timeout(limit, scenario(&env, &a, &b)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!(
                "the browser scenario did not finish within {limit:?}"
            )),
        };

        // Screenshots whatever happened: they are the first thing to look at when it failed.
        for (who, c) in [("a", &a), ("b", &b)] {
            save_screenshot(c, &env.out_dir.join(format!("{who}.png"))).await;
            if outcome.is_err() {
                if let Ok(Value::String(text)) =
                    c.execute("return document.body.innerText", vec![]).await
                {
                    eprintln!("--- page text of {who} ---\n{text}");
                }
            }
        }
        for c in [a, b] {
            let _ = tokio::time::timeout(Duration::from_secs(10), c.close()).await;
        }
        drop(driver);

        outcome?;
        env.pass();
        Ok(())
    })
    .await
}

async fn scenario(env: &Env, a: &Client, b: &Client) -> Result<()> {
    let urls = env.http_urls();
    let (gw_a, gw_b) = (&env.gateways[0], &env.gateways[1]);
    assert_eq!((gw_a.dc, gw_b.dc), (1, 2));
    a.goto(&format!("{}/", urls[0]))
        .await
        .context("A opens the page")?;
    b.goto(&format!("{}/", urls[1]))
        .await
        .context("B opens the page")?;

    // Each page names the gateway and datacenter that served it.
    for (c, gw) in [(a, gw_a), (b, gw_b)] {
        let want = format!("served by {} in dc{}", gw.id, gw.dc);
        let got = wait_text(c, "[data-testid=served-by]", &want).await?;
        println!("browser: {} shows {got:?}", gw.id);
    }

    let (alice, bora) = ("alice", "bora");
    sign_up(a, alice, "correct horse battery").await?;
    // A taken handle is refused with readable text, and the page stays usable.
    click(b, "auth-tab-signup").await?;
    fill(b, "signup-handle", alice).await?;
    fill(b, "signup-password", "staple of the beacon").await?;
    click(b, "signup-submit").await?;
    wait_text(b, "[data-testid=signup-error]", "handle is taken")
        .await
        .context("signing up with a taken handle says so")?;
    sign_up(b, bora, "staple of the beacon").await?;

    // A starts a direct chat with B by handle and sends with Enter.
    fill(a, "new-chat-handle", bora).await?;
    click(a, "new-chat-submit").await?;
    wait_text(a, "[data-testid=conversation-title]", bora).await?;
    let hello = "안녕 bora, the beacon is lit 🔥";
    fill(a, "composer-input", hello).await?;
    testid(a, "composer-input")
        .await?
        .send_keys(&char::from(Key::Enter).to_string())
        .await?;
    let own = wait_text(
        a,
        "[data-testid=message][data-seq='1'] [data-testid=message-text]",
        hello,
    )
    .await
    .context("A's own message is acknowledged with seq 1")?;
    assert_eq!(own, hello);
    korean_renders(a).await?;
    let input = testid(a, "composer-input").await?.prop("value").await?;
    assert_eq!(
        input.as_deref(),
        Some(""),
        "Enter sent the message and cleared the composer"
    );

    // B, without reloading: the conversation appears with A's message and an unread badge.
    let item = "[data-testid=conversation-item]".to_string();
    wait_text(b, &format!("{item} [data-testid=conversation-name]"), alice)
        .await
        .context("the new conversation appears in B's list live")?;
    wait_text(
        b,
        &format!("{item} [data-testid=conversation-preview]"),
        hello,
    )
    .await
    .context("B's list previews A's message")?;
    let badge = wait_text(b, &format!("{item} [data-testid=unread-badge]"), "1")
        .await
        .context("B sees one unread message before opening the chat")?;
    assert_eq!(badge, "1");
    save_screenshot(b, &env.out_dir.join("b-unread.png")).await;

    // B opens the chat: the message is there once, and the badge is gone.
    b.find(Locator::Css(&item)).await?.click().await?;
    wait_text(
        b,
        "[data-testid=message][data-seq='1'] [data-testid=message-text]",
        hello,
    )
    .await?;
    wait_gone(b, "[data-testid=unread-badge]")
        .await
        .context("opening the chat clears B's unread badge")?;

    // B replies with the send button; A sees it live.
    let reply = "Seen from dc2. 잘 받았어!";
    fill(b, "composer-input", reply).await?;
    click(b, "composer-send").await?;
    wait_text(
        b,
        "[data-testid=message][data-seq='2'] [data-testid=message-text]",
        reply,
    )
    .await?;
    let seen = wait_text(
        a,
        "[data-testid=message][data-seq='2'] [data-testid=message-text]",
        reply,
    )
    .await
    .context("A sees B's reply live")?;
    assert_eq!(seen, reply);

    // Same history on both sides, in order, nothing doubled; own messages on the right.
    for (who, c) in [("A", a), ("B", b)] {
        let rows = c
            .execute(
                r#"return [...document.querySelectorAll('[data-testid=message]')].map(m => [
                    m.dataset.seq || "",
                    m.querySelector('[data-testid=message-text]').textContent,
                    m.classList.contains('own'),
                ]);"#,
                vec![],
            )
            .await?;
        let mine = who == "A";
        let want = json!([["1", hello, mine], ["2", reply, !mine]]);
        assert_eq!(rows, want, "{who}'s conversation view");
    }
    // A has the chat open and visible, so B's reply is not counted unread there either.
    wait_gone(a, "[data-testid=unread-badge]").await?;
    Ok(())
}

/// Korean text is drawn in a real font, not as empty boxes: two different syllables, drawn in
/// the page's own font, give different pixels (missing glyphs are all the same box).
async fn korean_renders(c: &Client) -> Result<()> {
    let script = "
        const canvas = document.createElement('canvas');
        canvas.width = 64; canvas.height = 64;
        const g = canvas.getContext('2d');
        const family = getComputedStyle(document.body).fontFamily;
        const pixels = (text) => {
            g.clearRect(0, 0, 64, 64);
            g.font = '40px ' + family;
            g.fillText(text, 4, 48);
            return Array.from(g.getImageData(0, 0, 64, 64).data).join(',');
        };
        return pixels('안') !== pixels('녕');";
    match c.execute(script, vec![]).await? {
        Value::Bool(true) => Ok(()),
        other => bail!(
            "Korean text has no font in the browser (got {other}): install a CJK font \
             (`make test` installs fonts-noto-cjk as root)"
        ),
    }
}

async fn save_screenshot(c: &Client, path: &Path) {
    match c.screenshot().await {
        Ok(png) => match std::fs::write(path, png) {
            Ok(()) => println!("browser: screenshot saved to {}", path.display()),
            Err(e) => eprintln!("browser: cannot write {}: {e}", path.display()),
        },
        Err(e) => eprintln!("browser: no screenshot for {}: {e}", path.display()),
    }
}

async fn sign_up(c: &Client, handle: &str, password: &str) -> Result<()> {
    click(c, "auth-tab-signup").await?;
    fill(c, "signup-handle", handle).await?;
    fill(c, "signup-password", password).await?;
    click(c, "signup-submit").await?;
    wait_text(c, "[data-testid=me-handle]", &format!("@{handle}"))
        .await
        .with_context(|| format!("{handle} signs up"))?;
    Ok(())
}

async fn testid(c: &Client, id: &str) -> Result<fantoccini::elements::Element> {
    let css = format!("[data-testid='{id}']");
    let deadline = Instant::now() + SHOW_UP;
    loop {
        if let Ok(e) = c.find(Locator::Css(&css)).await {
            if e.is_displayed().await.unwrap_or(false) {
                return Ok(e);
            }
        }
        if Instant::now() > deadline {
            bail!("no visible element {css} within {SHOW_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn fill(c: &Client, id: &str, text: &str) -> Result<()> {
    let e = testid(c, id).await?;
    e.clear().await?;
    e.send_keys(text)
        .await
        .with_context(|| format!("type into {id}"))?;
    Ok(())
}

async fn click(c: &Client, id: &str) -> Result<()> {
    testid(c, id)
        .await?
        .click()
        .await
        .with_context(|| format!("click {id}"))?;
    Ok(())
}

/// Waits until some element matching `css` has visible text containing `want`; returns it.
async fn wait_text(c: &Client, css: &str, want: &str) -> Result<String> {
    let deadline = Instant::now() + SHOW_UP;
    let mut last = Vec::new();
    loop {
        last.clear();
        if let Ok(found) = c.find_all(Locator::Css(css)).await {
            for e in found {
                if let Ok(t) = e.text().await {
                    if t.contains(want) {
                        return Ok(t);
                    }
                    last.push(t);
                }
            }
        }
        if Instant::now() > deadline {
            bail!("no {css} with text {want:?} within {SHOW_UP:?}; saw {last:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_gone(c: &Client, css: &str) -> Result<()> {
    let deadline = Instant::now() + SHOW_UP;
    loop {
        match c.find_all(Locator::Css(css)).await {
            Ok(v) if v.is_empty() => return Ok(()),
            _ => {}
        }
        if Instant::now() > deadline {
            bail!("{css} still on the page after {SHOW_UP:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chromedriver child process on a free loopback port, SIGKILLed by PID on drop.
struct Chromedriver {
    child: Option<Child>,
    url: String,
}

impl Chromedriver {
    fn start(log: &Path) -> Result<Chromedriver> {
        let port = process::free_ports(Ipv4Addr::LOCALHOST, 1)
            .context("find a free port for chromedriver")?[0];
        let _ = std::fs::remove_file(log);
        let mut cmd = Command::new(CHROMEDRIVER);
        cmd.arg(format!("--port={port}"));
        let child = process::spawn(&mut cmd, log, libc::SIGKILL)?;
        Ok(Chromedriver {
            child: Some(child),
            url: format!("http://127.0.0.1:{port}"),
        })
    }

    async fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(r) = http
                .get(format!("{}/status", self.url))
                .timeout(Duration::from_secs(1))
                .send()
                .await
            {
                if let Ok(v) = r.json::<Value>().await {
                    if v["value"]["ready"] == json!(true) {
                        return Ok(());
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("chromedriver at {} not ready within {timeout:?}", self.url);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A new browser with a fresh profile (kept until the returned directory is dropped).
    async fn session(&self) -> Result<(Client, tempfile::TempDir)> {
        let profile = tempfile::Builder::new()
            .prefix("bongsu-browser-")
            .tempdir()
            .context("create a browser profile directory")?;
        let dir: PathBuf = profile.path().to_path_buf();
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), json!("chrome"));
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--window-size=1200,800",
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--lang=en-US",
                    format!("--user-data-dir={}", dir.display()),
                ],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .context("start a Chromium session through chromedriver")?;
        Ok((client, profile))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            process::stop(c, libc::SIGKILL);
        }
    }
}
