//! The local console in a real browser: headless Chromium driven through chromedriver
//! (WebDriver, `fantoccini`), against a local server on the embedded store. Every flow is
//! started from the console and must come back to it; every landing page must be an HTML page
//! with a way back (never raw JSON); the flash messages must say what happened; and what the
//! console lists must be what the store holds.
//!
//! The browser: `GATEHOUSE_CHROMIUM` and `GATEHOUSE_CHROMEDRIVER` (tests/run.sh installs Debian's
//! `chromium` and `chromium-driver` and sets both), else `/usr/bin/chromium` and
//! `/usr/bin/chromedriver`. Without them the test says it was not run, or fails when
//! `GATEHOUSE_REQUIRE_BROWSER=1` (as tests/run.sh sets).

use crate::harness::Harness;
use fantoccini::{Client, ClientBuilder, Locator};
use gatehouse::store::Key;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Chromium and chromedriver are, or `None` (said on stderr) when the test cannot run.
///
/// # Panics
/// When either is missing and `GATEHOUSE_REQUIRE_BROWSER=1`.
fn browser_paths() -> Option<(PathBuf, PathBuf)> {
    let find = |var: &str, default: &str| {
        std::env::var_os(var)
            .filter(|v| !v.is_empty())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let chromium = find("GATEHOUSE_CHROMIUM", "/usr/bin/chromium");
    let driver = find("GATEHOUSE_CHROMEDRIVER", "/usr/bin/chromedriver");
    let missing: Vec<String> = [&chromium, &driver]
        .iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
    if missing.is_empty() {
        return Some((chromium, driver));
    }
    let why = format!(
        "the console's browser test needs Chromium and chromedriver; not found: {} \
         (install Debian's `chromium` and `chromium-driver`, or set GATEHOUSE_CHROMIUM and \
         GATEHOUSE_CHROMEDRIVER; ./tests/run.sh does both)",
        missing.join(", ")
    );
    if std::env::var("GATEHOUSE_REQUIRE_BROWSER").as_deref() == Ok("1") {
        panic!("{why}");
    }
    eprintln!("not run: {why}");
    None
}

/// A chromedriver on a free port, stopped on drop, and the browser session it drives.
struct Browser {
    client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("its address").port()
}

impl Browser {
    async fn start(chromium: &std::path::Path, driver: &std::path::Path) -> Browser {
        let port = free_port();
        let profile = tempfile::tempdir().expect("a profile dir");
        let log = std::fs::File::create(profile.path().join("chromedriver.log")).expect("a log");
        let mut child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", driver.display()));
        let url = format!("http://127.0.0.1:{port}");
        let http = crate::support::http();
        let started = Instant::now();
        loop {
            if http
                .get(format!("{url}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("chromedriver exited at start-up: {status}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "chromedriver did not answer within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // As root in a container: Chromium's sandbox needs user namespaces.
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    // A closed network (CI's) drops or refuses what Chromium fetches for itself
                    // (updates, sync, Google's hosts), which can stall its start or a page.
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--disable-quic",
                    format!("--user-data-dir={}", profile.path().join("profile").display()),
                ],
            }),
        );
        let client = match ClientBuilder::rustls()
            .expect("a WebDriver client")
            .capabilities(caps)
            .connect(&url)
            .await
        {
            Ok(client) => client,
            Err(e) => {
                let log = std::fs::read_to_string(profile.path().join("chromedriver.log"))
                    .unwrap_or_default();
                let _ = child.kill();
                panic!("no browser session: {e}; chromedriver said:\n{log}");
            }
        };
        // WebDriver's own default waits five minutes for a page; every page here is local and
        // loads in milliseconds, so a page that takes 30 s is a failure, said as one.
        client
            .update_timeouts(fantoccini::wd::TimeoutConfiguration::new(
                Some(Duration::from_secs(30)),
                Some(Duration::from_secs(30)),
                None,
            ))
            .await
            .expect("WebDriver timeouts");
        Browser {
            client,
            driver: child,
            _profile: profile,
        }
    }
}

/// The walk's steps over one browser and one server.
struct Walk<'a> {
    c: &'a Client,
    h: &'a Harness,
}

impl Walk<'_> {
    async fn path(&self) -> String {
        self.c
            .current_url()
            .await
            .expect("the current URL")
            .path()
            .to_owned()
    }

    /// Waits until the page has loaded and is not one that submits itself (the simulated
    /// identity servers' `form_post` pages).
    async fn settle(&self) {
        let started = Instant::now();
        loop {
            let ready = self
                .c
                .execute("return document.readyState", vec![])
                .await
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned));
            let title = self.c.title().await.unwrap_or_default();
            if ready.as_deref() == Some("complete") && title != "Submit this form" {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the page at {} did not settle",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        match self.c.find(Locator::Css(css)).await {
            Ok(found) => found,
            Err(e) => {
                let (_, text) = self.document().await;
                panic!(
                    "no `{css}` on {}: {e}; the page says: {text}",
                    self.path().await
                )
            }
        }
    }

    async fn click(&self, css: &str) {
        let element = self.find(css).await;
        self.click_away(&element, css).await;
    }

    /// Clicks `element` (a link or a form's button) and waits for the page it leads to: until
    /// the element is gone with the page it was on, then until the new one has settled.
    async fn click_away(&self, element: &fantoccini::elements::Element, what: &str) {
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("`{what}` cannot be clicked: {e}"));
        let started = Instant::now();
        while element.tag_name().await.is_ok() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "clicking `{what}` on {} led nowhere",
                self.path().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.settle().await;
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field.clear().await.expect("cleared");
        field.send_keys(text).await.expect("typed");
    }

    /// The document's content type and its text.
    async fn document(&self) -> (String, String) {
        let doc = self
            .c
            .execute(
                "return [document.contentType, document.body ? document.body.innerText : '']",
                vec![],
            )
            .await
            .expect("the document");
        (
            doc[0].as_str().unwrap_or("").to_owned(),
            doc[1].as_str().unwrap_or("").to_owned(),
        )
    }

    /// Where a flow ended: an HTML page, not raw JSON, and either the console itself or a page
    /// with a link back to it.
    async fn assert_landing(&self, what: &str) {
        let (content_type, text) = self.document().await;
        let path = self.path().await;
        assert_eq!(
            content_type, "text/html",
            "{what}: {path} is not a page: {text}"
        );
        let trimmed = text.trim_start();
        assert!(
            !trimmed.starts_with('{') && !trimmed.starts_with('['),
            "{what}: {path} shows raw JSON: {text}"
        );
        if path != "/" {
            let back = self
                .c
                .find(Locator::Css("#console-back a"))
                .await
                .unwrap_or_else(|_| panic!("{what}: {path} has no way back: {text}"));
            let href = back.attr("href").await.unwrap().unwrap_or_default();
            assert!(href.starts_with("/"), "{what}: the way back is {href}");
        }
    }

    /// Clicks the way back and returns the console's flash message.
    async fn back(&self, what: &str) -> String {
        self.assert_landing(what).await;
        if self.path().await != "/" {
            self.click("#console-back a").await;
        }
        assert_eq!(self.path().await, "/", "{what}: back on the console");
        let flash = self.flash().await;
        eprintln!("{what}: {flash}");
        flash
    }

    async fn flash(&self) -> String {
        match self.c.find(Locator::Css("#flash")).await {
            Ok(flash) => flash.text().await.expect("the flash's text"),
            Err(_) => String::new(),
        }
    }

    async fn console(&self) {
        self.c.goto(&self.h.url("/")).await.expect("the console");
        self.settle().await;
        self.assert_landing("the console").await;
    }

    /// The console's connections must be the store's, with the same status.
    async fn assert_connections_match_the_store(&self) {
        self.console().await;
        let mut shown = Vec::new();
        for row in self
            .c
            .find_all(Locator::Css("tr.connection"))
            .await
            .expect("rows")
        {
            let attr = |name: &'static str| {
                let row = row.clone();
                async move { row.attr(name).await.unwrap().unwrap_or_default() }
            };
            shown.push((
                attr("data-platform").await,
                attr("data-tenant").await,
                attr("data-status").await,
            ));
        }
        let mut stored: Vec<(String, String, String)> =
            gatehouse_local::console::connections(self.h.server.app.store.as_ref())
                .await
                .expect("the store's connections")
                .into_iter()
                .map(|(_, c, _)| (c.platform, c.tenant, c.status.as_str().to_owned()))
                .collect();
        shown.sort();
        stored.sort();
        assert_eq!(shown, stored, "the console lists what is stored");
    }

    /// Clicks the console button `label` in the row `row_css`.
    async fn row_button(&self, row_css: &str, label: &str) {
        let row = self
            .c
            .find(Locator::Css(row_css))
            .await
            .unwrap_or_else(|e| panic!("no row `{row_css}`: {e}"));
        for b in row.find_all(Locator::Css("button")).await.expect("buttons") {
            if b.text().await.unwrap_or_default() == label {
                self.click_away(&b, label).await;
                return;
            }
        }
        panic!("no `{label}` button in `{row_css}`");
    }

    /// On the simulated Haravan sign-in pages, signs in as `sub` until a page of the app's.
    async fn haravan_sign_in(&self, sub: &str) {
        for _ in 0..4 {
            if !self.path().await.starts_with("/_sim/haravan") {
                return;
            }
            self.click(&format!("button[name='sub'][value='{sub}']"))
                .await;
        }
        panic!(
            "Haravan's sign-in did not end on the app: {}",
            self.path().await
        );
    }

    async fn stored(&self, key: &Key) -> Option<gatehouse::store::Item> {
        self.h.server.app.store.get(key).await.expect("the store")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flow_starts_on_the_console_and_comes_back_to_it() {
    let Some((chromium, driver)) = browser_paths() else {
        return;
    };
    let h = Harness::embedded().await;
    let browser = Browser::start(&chromium, &driver).await;
    let w = Walk {
        c: &browser.client,
        h: &h,
    };
    w.console().await;
    w.assert_connections_match_the_store().await;

    // Sesami: install from the simulated app store, consent, and back.
    w.click("#sesami-install").await;
    assert!(
        w.path().await.starts_with("/_sim/sesami/"),
        "{}",
        w.path().await
    );
    w.click("button[value='allow']").await;
    assert_eq!(w.path().await, "/sesami/callback");
    let flash = w.back("Sesami's install").await;
    assert!(flash.contains("/sesami/callback answered 200"), "{flash}");
    let shop = w
        .stored(&gatehouse::sesami::install_key("demo-shop"))
        .await
        .expect("installed");
    let created = gatehouse::connection::view(&shop)
        .unwrap()
        .created_at
        .unwrap();
    let row =
        w.c.find(Locator::Css("tr.connection[data-platform='sesami']"))
            .await
            .expect("the install is listed")
            .text()
            .await
            .unwrap();
    assert!(
        row.contains(&gatehouse_local::console::when(created, created)[..20]),
        "its time as a date: {row}"
    );
    w.assert_connections_match_the_store().await;

    // Sesami's webhooks, each verdict.
    w.click("#sesami-webhook").await;
    let flash = w.back("a Sesami webhook").await;
    assert!(
        flash.contains("booking_created") && flash.contains("accepted (200)"),
        "{flash}"
    );
    w.click("#sesami-webhook-twice").await;
    let flash = w.back("a Sesami webhook twice").await;
    assert!(
        flash.contains("accepted (200), then duplicate (200)"),
        "{flash}"
    );
    w.click("#sesami-webhook-tampered").await;
    let flash = w.back("a badly signed Sesami webhook").await;
    assert!(flash.contains("refused (401"), "{flash}");
    let mut verdicts = Vec::new();
    for row in
        w.c.find_all(Locator::Css("tr.delivery[data-platform='sesami']"))
            .await
            .unwrap()
    {
        verdicts.push(row.attr("data-verdict").await.unwrap().unwrap_or_default());
    }
    assert_eq!(
        verdicts,
        ["refused", "duplicate", "accepted", "accepted"],
        "newest first"
    );

    // Haravan: open the app as demo-one's admin (an install), then again (a session).
    w.click("#haravan-open").await;
    w.haravan_sign_in("200000011111").await;
    let flash = w.back("Haravan's install").await;
    assert!(flash.contains("answered 200"), "{flash}");
    assert!(
        w.stored(&gatehouse::haravan::install_key("1000111111"))
            .await
            .is_some(),
        "installed"
    );
    w.click("#haravan-open").await;
    w.haravan_sign_in("200000011111").await;
    let flash = w.back("Haravan's sign-in").await;
    assert!(flash.contains("answered 200"), "{flash}");
    let sessions = h.items("session#haravan").await;
    assert!(!sessions.is_empty(), "a session");
    let sid = sessions[0].str("sid").unwrap().to_owned();
    w.row_button(&format!("tr.session[data-sid='{sid}']"), "sign out")
        .await;
    let flash = w.back("Haravan's logout").await;
    assert!(
        flash.contains(&format!("Signed out of Haravan session {sid}")),
        "{flash}"
    );
    assert!(
        h.items("session#haravan")
            .await
            .iter()
            .all(|s| s.str("sid") != Some(sid.as_str())),
        "signed out"
    );
    assert!(
        w.c.find(Locator::Css(&format!("tr.session[data-sid='{sid}']")))
            .await
            .is_err(),
        "no longer listed"
    );
    w.click("#haravan-webhook").await;
    let flash = w.back("a Haravan webhook").await;
    assert!(
        flash.contains("shop/update") && flash.contains("accepted (200)"),
        "{flash}"
    );
    w.click("#haravan-webhook-twice").await;
    let flash = w.back("a Haravan webhook twice").await;
    // The same shop as just sent: Haravan's deliveries are told apart by what they say.
    assert!(flash.ends_with(", then duplicate (200)."), "{flash}");
    // Staff cannot install: the refusal is a page with the way back too.
    w.click("#haravan-open").await;
    w.haravan_sign_in("200000033333").await;
    let flash = w.back("Haravan's refusal of staff").await;
    assert!(
        flash.contains("/haravan/install/login answered 4"),
        "{flash}"
    );
    w.assert_connections_match_the_store().await;

    // Saison connect: a connect link for demo-user, the simulated screen, and back.
    w.click("#saison-connect").await;
    assert!(
        w.path().await.starts_with("/_sim/saison/"),
        "{}",
        w.path().await
    );
    w.fill("input[name='id']", "card-7").await;
    w.fill("input[name='password']", "password").await;
    w.click("button[type='submit']").await;
    let flash = w.back("Saison's connect").await;
    assert!(flash.starts_with("Connected: Saison connect"), "{flash}");
    let cards = h.items("conn#saison").await;
    assert_eq!(cards.len(), 1);
    let card = gatehouse::connection::view(&cards[0]).unwrap();
    assert!(card.created_at.is_some_and(|t| t > 0), "{card:?}");
    let row =
        w.c.find(Locator::Css("tr.connection[data-platform='saison']"))
            .await
            .expect("listed")
            .text()
            .await
            .unwrap();
    assert!(
        !row.contains("1970-01-01"),
        "its connected time, not 0: {row}"
    );
    w.assert_connections_match_the_store().await;

    // MTN MoMo: a payment from the form; the simulator calls back and the status goes live.
    w.fill("input[name='amount']", "12.50").await;
    w.click("#momo-pay").await;
    let flash = w.back("a MoMo payment").await;
    assert!(
        flash.contains("Requested 12.50 EUR from payer 46733123450"),
        "{flash}"
    );
    let payments = h.items("tx#momo").await;
    assert_eq!(payments.len(), 1);
    let reference = payments[0].key.sk.clone();
    let started = Instant::now();
    let status = loop {
        w.console().await;
        let status =
            w.c.find(Locator::Css(&format!(
                "tr.payment[data-reference='{reference}']"
            )))
            .await
            .expect("listed")
            .attr("data-status")
            .await
            .unwrap()
            .unwrap_or_default();
        if status != "PENDING" || started.elapsed() > Duration::from_secs(60) {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert_eq!(status, "SUCCESSFUL");
    let tx = w
        .stored(&gatehouse::momo::transaction_key(&reference))
        .await
        .unwrap();
    assert_eq!(tx.str("status"), Some(status.as_str()), "as stored");
    let callbacks =
        w.c.find_all(Locator::Css(
            "tr.delivery[data-platform='momo'][data-verdict='accepted']",
        ))
        .await
        .unwrap();
    assert_eq!(callbacks.len(), 1, "MoMo's callback is listed");

    // WebLink: sign in, back, and a fresh token whose value is never shown.
    w.click("#weblink-login").await;
    assert!(
        w.path().await.starts_with("/_sim/weblink/"),
        "{}",
        w.path().await
    );
    w.fill("input[name='email']", "jane@example.com").await;
    w.fill("input[name='password']", "password").await;
    w.click("button[type='submit']").await;
    let flash = w.back("WebLink's sign-in").await;
    assert!(flash.contains("/weblink/callback answered 200"), "{flash}");
    w.click("#weblink-refresh").await;
    let flash = w.back("WebLink's fresh token").await;
    assert!(
        flash.starts_with("Obtained a fresh WebLink access token") && flash.contains("redacted"),
        "{flash}"
    );
    let sessions = h.items("session#weblink").await;
    assert_eq!(sessions.len(), 1);
    let keys = h.server.app.secrets.app_keys().await.unwrap();
    let token = gatehouse::refresh::open(&keys, &sessions[0])
        .unwrap()
        .access_token;
    let source = w.c.source().await.unwrap();
    assert!(
        !source.contains(secrecy::ExposeSecret::expose_secret(&token)),
        "the token is never shown"
    );
    w.assert_connections_match_the_store().await;

    // The schedules, run from the console: nothing is idle yet, so the refresh touches nothing.
    w.click("#schedules-refresh").await;
    let flash = w.back("the scheduled refresh").await;
    assert!(
        flash.starts_with("Scheduled refresh: ") && flash.contains(" 0 refreshed"),
        "{flash}"
    );
    w.click("#schedules-reconcile").await;
    let flash = w.back("the MoMo reconciler").await;
    assert!(flash.starts_with("MoMo reconciler: "), "{flash}");

    // Force a refresh of each connection.
    w.row_button("tr.connection[data-platform='haravan']", "force a refresh")
        .await;
    let flash = w.back("Haravan's refresh").await;
    assert!(flash.starts_with("Refreshed Haravan 1000111111"), "{flash}");
    let org = w
        .stored(&gatehouse::haravan::install_key("1000111111"))
        .await
        .unwrap();
    assert!(
        gatehouse::connection::view(&org)
            .unwrap()
            .last_refresh_at
            .is_some(),
        "refreshed in the store"
    );
    w.row_button("tr.connection[data-platform='weblink']", "force a refresh")
        .await;
    let flash = w.back("WebLink's refresh").await;
    assert!(
        flash.starts_with("Refreshed Administrate WebLink"),
        "{flash}"
    );
    w.row_button("tr.connection[data-platform='saison']", "force a refresh")
        .await;
    let flash = w.back("Saison's refresh").await;
    assert!(flash.contains("Saison connect"), "{flash}");
    w.row_button("tr.connection[data-platform='sesami']", "force a refresh")
        .await;
    let flash = w.back("Sesami's refresh").await;
    assert!(flash.contains("do not expire"), "{flash}");
    w.assert_connections_match_the_store().await;
    // A refresh the platform refuses: the connection needs re-authorization, and says why.
    h.server.haravan.revoke_refresh_tokens("1000111111");
    w.row_button("tr.connection[data-platform='haravan']", "force a refresh")
        .await;
    let flash = w.back("Haravan's refused refresh").await;
    assert!(flash.contains("was not refreshed"), "{flash}");
    let row = w.find("tr.connection[data-platform='haravan']").await;
    assert_eq!(
        row.attr("data-status").await.unwrap().as_deref(),
        Some("needs_reauth")
    );
    let org = w
        .stored(&gatehouse::haravan::install_key("1000111111"))
        .await
        .unwrap();
    let last_error = gatehouse::connection::view(&org)
        .unwrap()
        .last_error
        .unwrap();
    assert!(
        row.text().await.unwrap().contains(&last_error),
        "its last error is shown: {last_error}"
    );
    w.assert_connections_match_the_store().await;

    // Revoke one; an uninstall webhook removes another.
    w.row_button("tr.connection[data-platform='sesami']", "revoke")
        .await;
    let flash = w.back("Sesami's revocation").await;
    assert!(flash.starts_with("Revoked Sesami demo-shop"), "{flash}");
    assert!(
        w.stored(&gatehouse::sesami::install_key("demo-shop"))
            .await
            .is_none()
    );
    let removed =
        w.c.find_all(Locator::Css("tr.event[data-name='connection.removed']"))
            .await
            .unwrap();
    assert_eq!(removed.len(), 1, "its event is listed");
    w.c.find(Locator::Css("select[name='topic']"))
        .await
        .unwrap()
        .select_by_value("app/uninstalled")
        .await
        .unwrap();
    w.click("#haravan-webhook").await;
    let flash = w.back("Haravan's uninstall").await;
    assert!(
        flash.contains("app/uninstalled") && flash.contains("accepted"),
        "{flash}"
    );
    assert!(
        w.stored(&gatehouse::haravan::install_key("1000111111"))
            .await
            .is_none()
    );
    w.assert_connections_match_the_store().await;

    // Gatehouse's answers that are not pages, opened by a browser the console started a flow
    // in: a page each, with the way back, the JSON's secrets never shown.
    for (target, says) in [
        ("/haravan/logout?sid=no-such-session", "signed out"),
        ("/no/such/route", "no such route"),
    ] {
        w.c.goto(&h.url(target)).await.unwrap();
        w.settle().await;
        let (_, text) = w.document().await;
        assert!(text.contains(says), "{target}: {text}");
        let flash = w.back(target).await;
        assert!(flash.starts_with("Back from GET"), "{flash}");
    }

    // An action's address typed or reloaded does nothing, and says so.
    w.c.goto(&h.url("/_local/console/revoke")).await.unwrap();
    w.settle().await;
    let flash = w.back("an action's address").await;
    assert!(flash.contains("nothing was done"), "{flash}");

    // The outbox page, and back.
    w.click("a[href='/_local/events']").await;
    let (content_type, text) = w.document().await;
    assert_eq!(content_type, "text/html");
    assert!(text.contains("connection.removed"), "{text}");
    w.click("a[href='/']").await;
    assert_eq!(w.path().await, "/");

    let _ = browser.client.clone().close().await;
}

/// Another site open in the developer's browser cannot press the console's buttons (the
/// browser says where a form was posted from); the console's own forms can.
#[tokio::test]
async fn a_console_action_posted_from_another_site_is_refused() {
    let h = Harness::embedded().await;
    let http = crate::support::http_without_redirects();
    let post = |site: &'static str| {
        http.post(h.url("/_local/console/sesami/webhook"))
            .header("sec-fetch-site", site)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("shop=demo-shop&event=booking_created&variant=signed")
            .send()
    };
    let refused = post("cross-site").await.unwrap();
    assert_eq!(refused.status(), 403);
    let page = refused.text().await.unwrap();
    assert!(page.contains("href=\"/\""), "a way back: {page}");
    assert!(h.server.deliveries.latest().is_empty(), "nothing was sent");
    let done = post("same-origin").await.unwrap();
    assert_eq!(done.status(), 303);
    let location = done.headers()["location"].to_str().unwrap().to_owned();
    assert!(location.starts_with("/?flash="), "{location}");
    assert_eq!(h.server.deliveries.latest().len(), 1);
}
