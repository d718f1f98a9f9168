//! The web console in a real browser: Debian's headless Chromium, driven over WebDriver by
//! `chromedriver` (packages chromium and chromium-driver), against real replicas.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

use crate::access::{access_file, grants, OPERATOR, READER};
use crate::harness::*;

/// A candidate id and an election name made of markup: they must show as these characters.
const HOSTILE_ID: &str = "<img src=x onerror=\"window.__pwned=1\">";
const HOSTILE_NAME: &str = "<script>window.__pwned=2</script>";

/// One headless Chromium, through a chromedriver of its own. Dropping it ends both, and any
/// Chromium process of its profile.
struct Browser {
    http: reqwest::Client,
    base: String,
    session: String,
    profile: PathBuf,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start(width: u32, height: u32) -> Self {
        let chromium = ["chromium", "chromium-browser", "google-chrome"]
            .into_iter()
            .find(|b| {
                std::process::Command::new(b)
                    .arg("--version")
                    .output()
                    .is_ok()
            })
            .expect("a Chromium (Debian: apt-get install chromium chromium-driver)");
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (Debian: apt-get install chromium-driver)");
        wait_for_port(port).await;
        let profile =
            std::env::temp_dir().join(format!("electiond-console-{}-{port}", std::process::id()));
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
        ];
        let which = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {chromium}")])
            .output()
            .expect("sh");
        let binary = String::from_utf8_lossy(&which.stdout).trim().to_owned();
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": args},
        }}});
        let r: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .expect("chromedriver answers")
            .json()
            .await
            .expect("json");
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {r}"))
            .to_owned();
        Self {
            http,
            base,
            session,
            profile,
            _driver: driver,
        }
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r: Value = self
            .http
            .post(format!("{}/session/{}/{path}", self.base, self.session))
            .json(&body)
            .send()
            .await
            .expect("webdriver call")
            .json()
            .await
            .expect("json");
        r["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.post("url", json!({ "url": url })).await;
    }

    /// Runs `script` (a function body) in the page and returns what it returns.
    async fn eval(&self, script: &str) -> Value {
        self.post("execute/sync", json!({ "script": script, "args": [] }))
            .await
    }

    /// Polls `script` until it returns true, for at most `within`; returns how long it took.
    async fn until(&self, script: &str, within: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.eval(script).await == Value::Bool(true) {
                return start.elapsed();
            }
            if start.elapsed() > within {
                let page = self.eval("return document.body.innerText").await;
                panic!("not within {within:?}: {script}\npage:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A screenshot of the page, kept as a test artefact; returns where.
    async fn screenshot(&self, name: &str) -> PathBuf {
        let r: Value = self
            .http
            .get(format!("{}/session/{}/screenshot", self.base, self.session))
            .send()
            .await
            .expect("screenshot")
            .json()
            .await
            .expect("json");
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["value"].as_str().expect("base64"))
            .expect("png");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver is killed with its handle; the browser it started may outlive it
        let _ = std::process::Command::new("pkill")
            .args(["-f", &self.profile.display().to_string()])
            .status();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// The names of the listed elections and the leader each row shows, as a script's result.
const ROWS: &str = "return [...document.querySelectorAll('#elections tbody tr')]\
                    .map(r => [r.dataset.name, r.querySelector('.leader').textContent])";

fn console_settings(
    redis: &RedisServer,
    prefix: &str,
) -> (electiond::config::Settings, SocketAddr) {
    let mut s = settings(redis, prefix);
    let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    s.console_addr = Some(addr.to_string());
    (s, addr)
}

#[tokio::test]
async fn the_console_lists_elections_and_shows_a_leader_made_elsewhere_at_once() {
    let redis = RedisServer::start().await;
    let p = prefix("console");
    let (mut s, console) = console_settings(&redis, &p);
    s.lease_ttl_ms = 60_000;
    let _shown = Replica::start(s).await;
    let (mut other_settings, _) = console_settings(&redis, &p);
    other_settings.lease_ttl_ms = 60_000;
    let other = Replica::start(other_settings).await;
    wait_for_port(console.port()).await;

    let mut a = other.client("nightly-report", "host-a").await;
    a.enter().await.unwrap();
    a.acting_as("nightly-report", "host-b")
        .enter()
        .await
        .unwrap();
    a.acting_as("nightly-report", HOSTILE_ID)
        .enter()
        .await
        .unwrap();
    a.acting_as(HOSTILE_NAME, "x").enter().await.unwrap();

    let browser = Browser::start(1100, 800).await;
    browser.goto(&format!("http://{console}/")).await;
    browser
        .until(
            &format!(
                "const rows = (() => {{ {ROWS} }})(); \
                 return rows.some(r => r[0] === 'nightly-report' && r[1] === 'host-a') \
                     && rows.some(r => r[0] === {HOSTILE_NAME:?}) \
                     && document.getElementById('live').textContent === 'live'"
            ),
            Duration::from_secs(10),
        )
        .await;

    // a change made through the other replica shows without reloading, from the live feed
    a.anoint("host-b").await.unwrap();
    let took = browser
        .until(
            &format!(
                "return (() => {{ {ROWS} }})().some(r => r[0] === 'nightly-report' && r[1] === 'host-b')"
            ),
            Duration::from_secs(2),
        )
        .await;
    eprintln!("the new leader showed after {took:?}");

    // one election: candidates in order with their leases, and its history
    browser
        .goto(&format!("http://{console}/#/e/nightly-report"))
        .await;
    browser
        .until(
            "return document.getElementById('name').textContent === 'nightly-report' \
                 && document.querySelectorAll('#candidates li').length === 3 \
                 && document.querySelectorAll('#history tbody tr').length === 2",
            Duration::from_secs(10),
        )
        .await;
    let candidates = browser
        .eval("return [...document.querySelectorAll('#candidates li .id')].map(e => e.textContent)")
        .await;
    assert_eq!(candidates, json!(["host-b", "host-a", HOSTILE_ID]));
    let lease = browser
        .eval("return document.querySelector('#candidates li .lease').textContent")
        .await;
    assert!(
        lease.as_str().is_some_and(|l| l.ends_with(" s left")),
        "{lease}"
    );
    let causes = browser
        .eval("return [...document.querySelectorAll('#history .cause')].map(e => e.textContent)")
        .await;
    assert_eq!(causes, json!(["anoint", "enter"]));
    // markup in an id and a name is text: no element made of it, no script run
    let harm = browser
        .eval(
            "return [document.querySelectorAll('img, script:not([src])').length, \
                     typeof window.__pwned]",
        )
        .await;
    assert_eq!(harm, json!([0, "undefined"]));

    // and the detail keeps up: a change through the other replica shows
    a.anoint(HOSTILE_ID).await.unwrap();
    browser
        .until(
            &format!("return document.getElementById('leader').textContent === {HOSTILE_ID:?}"),
            Duration::from_secs(2),
        )
        .await;
    let path = browser.screenshot("console-election.png").await;
    eprintln!("screenshot: {}", path.display());
    let harm = browser
        .eval("return [document.querySelectorAll('img').length, typeof window.__pwned]")
        .await;
    assert_eq!(harm, json!([0, "undefined"]));

    // the hostile name's own page
    browser
        .goto(&format!(
            "http://{console}/#/e/{}",
            "%3Cscript%3Ewindow.__pwned%3D2%3C%2Fscript%3E"
        ))
        .await;
    browser
        .until(
            &format!("return document.getElementById('name').textContent === {HOSTILE_NAME:?}"),
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser.eval("return typeof window.__pwned").await,
        json!("undefined")
    );
}

#[tokio::test]
async fn the_console_fits_a_phone() {
    let redis = RedisServer::start().await;
    let (s, console) = console_settings(&redis, &prefix("console-phone"));
    let r = Replica::start(s).await;
    wait_for_port(console.port()).await;
    let mut c = r
        .client(
            "a-rather-long-election-name/for-the-nightly-report",
            "host-a.example.internal",
        )
        .await;
    c.enter().await.unwrap();
    let browser = Browser::start(390, 844).await;
    browser.goto(&format!("http://{console}/")).await;
    browser
        .until(
            "return document.querySelectorAll('#elections tbody tr').length === 1",
            Duration::from_secs(10),
        )
        .await;
    // nothing wider than the screen: no sideways scrolling
    let widths = browser
        .eval("return [document.documentElement.scrollWidth, window.innerWidth]")
        .await;
    assert!(
        widths[0].as_u64() <= widths[1].as_u64(),
        "page {widths} wider than the screen"
    );
    browser.screenshot("console-phone.png").await;
}

#[tokio::test]
async fn with_access_control_a_page_shows_what_its_token_reads_and_acts_only_after_confirming() {
    let redis = RedisServer::start().await;
    let file = access_file("console-access", &grants());
    let (mut s, console) = console_settings(&redis, &prefix("console-access"));
    s.access_file = Some(file.display().to_string());
    let r = Replica::start(s).await;
    wait_for_port(console.port()).await;
    let admin = Client::connect(r.addr, "", "w")
        .await
        .with_token(crate::access::ADMIN);
    for (e, c) in [
        ("team-a/x", "a-1"),
        ("team-a/x", "a-2"),
        ("team-b/y", "b-1"),
    ] {
        admin.acting_as(e, c).enter().await.unwrap();
    }

    let browser = Browser::start(1100, 800).await;
    browser.goto(&format!("http://{console}/")).await;
    // no token yet: the page asks for one, and lists nothing
    browser
        .until(
            "return !document.getElementById('token-form').hidden \
                 && document.querySelectorAll('#elections tbody tr').length === 0",
            Duration::from_secs(10),
        )
        .await;
    let use_token = |token: &str| {
        format!(
            "document.getElementById('token').value = {token:?}; \
             document.getElementById('token-form').requestSubmit(); return true"
        )
    };
    browser.eval(&use_token(READER)).await;
    browser
        .until(
            &format!(
                "return JSON.stringify((() => {{ {ROWS} }})()) === '[[\"team-a/x\",\"a-1\"]]'"
            ),
            Duration::from_secs(10),
        )
        .await;
    // a reader sees the election, and no action
    browser
        .goto(&format!("http://{console}/#/e/team-a%2Fx"))
        .await;
    browser
        .until(
            "return document.querySelectorAll('#candidates li').length === 2",
            Duration::from_secs(10),
        )
        .await;
    assert_eq!(
        browser
            .eval("return document.querySelectorAll('#candidates button').length")
            .await,
        json!(0)
    );
    // nor another team's election, asked for by name
    browser
        .goto(&format!("http://{console}/#/e/team-b%2Fy"))
        .await;
    browser
        .until(
            "const e = document.getElementById('error'); \
             return !e.hidden && e.textContent.includes('may not')",
            Duration::from_secs(10),
        )
        .await;

    // team-a's operator: anoint, which waits for the confirmation
    browser.eval(&use_token(OPERATOR)).await;
    browser
        .goto(&format!("http://{console}/#/e/team-a%2Fx"))
        .await;
    browser
        .until(
            "return [...document.querySelectorAll('#candidates button')].some(b => b.textContent === 'Anoint')",
            Duration::from_secs(10),
        )
        .await;
    browser
        .eval(
            "[...document.querySelectorAll('#candidates button')]\
             .find(b => b.textContent === 'Anoint').click(); return true",
        )
        .await;
    browser
        .until(
            "return document.getElementById('confirm').open",
            Duration::from_secs(5),
        )
        .await;
    let mut check = admin.acting_as("team-a/x", "");
    assert_eq!(
        check.get_term().await.unwrap().leader,
        "a-1",
        "not before confirming"
    );
    browser
        .eval("document.getElementById('confirm-ok').click(); return true")
        .await;
    wait_for(|| {
        let mut check = check.clone();
        async move { check.get_term().await.is_ok_and(|t| t.leader == "a-2") }
    })
    .await;
    browser
        .until(
            "return document.getElementById('leader').textContent === 'a-2'",
            Duration::from_secs(5),
        )
        .await;

    // another site cannot act: no token without the page's header, and no form posts
    let http = reqwest::Client::new();
    let api = format!("http://{console}/api/evict");
    let no_token = http
        .post(&api)
        .json(&json!({"name": "team-a/x", "candidate": "a-2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(no_token.status(), 401);
    let form = http
        .post(&api)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("authorization", format!("Bearer {OPERATOR}"))
        .body("name=team-a/x&candidate=a-2")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 415);
    assert_eq!(check.get_term().await.unwrap().leader, "a-2");
    let page = http.get(format!("http://{console}/")).send().await.unwrap();
    let policy = page
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(policy.contains("script-src 'self'"), "{policy}");
    assert!(!policy.contains("unsafe-inline"), "{policy}");
    let _ = std::fs::remove_dir_all(file.parent().expect("dir"));
}
