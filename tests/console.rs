//! The operators' console (`/console`): its files and headers over HTTP, the API calls it
//! makes (`/v1/whoami`, `/v1/status`, `/v1/model/plots`, subject search) on SQLite and
//! PostgreSQL, and an operator working it in a real headless Chromium through chromedriver.
//! `DVSP_SCREENSHOTS=<dir>` (`make screenshots`) also writes a PNG of each page there.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{assert_error, digits, key_with, keys, send, Server};
use dvsp_server::auth::{Role, ScorePolicy};
use fantoccini::{Client as Browser, ClientBuilder, Locator};
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_embedded_with_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("c.db").display());
    let s = Server::start(&db, &[]).await;
    let c = Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = c.get(s.url("/console")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(r.headers()["location"], "/console/");
    let r = c.get(s.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    let csp = h["content-security-policy"].to_str().unwrap();
    assert_eq!(csp, dvsp_server::console::CSP);
    for needed in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(needed), "{csp} lacks {needed}");
    }
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["x-frame-options"], "DENY");
    let page = r.text().await.unwrap();
    // Nothing inline: every script has a src, no style attribute or element, no handler.
    assert!(page.contains(r#"<script type="module" src="app.js"></script>"#));
    assert_eq!(page.matches("<script").count(), 1, "{page}");
    for inline in ["style=", "<style", " onload=", " onclick="] {
        assert!(!page.contains(inline), "{inline} in {page}");
    }
    for (path, media_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/style.css", "text/css; charset=utf-8"),
        (
            "/console/vendor/htm-preact.mjs",
            "text/javascript; charset=utf-8",
        ),
    ] {
        let r = c.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert_eq!(r.headers()["content-type"], media_type, "{path}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        assert!(r.headers().contains_key("content-security-policy"));
        assert!(!r.bytes().await.unwrap().is_empty());
    }
    // The app stores the key in sessionStorage only.
    let app = c
        .get(s.url("/console/app.js"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(app.contains("sessionStorage") && !app.contains("localStorage"));
    assert!(!app.contains("document.cookie"));
    for missing in [
        "/console/nope.js",
        "/console/../Cargo.toml",
        "/console/vendor",
    ] {
        let r = send(c.get(s.url(missing))).await;
        assert_error(&r, 404);
    }
    // API replies are not to be sniffed or framed either.
    let r = c.get(s.url("/v1/model")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.headers()["x-frame-options"], "DENY");
    s.stop().await;
}

/// What the console calls, the same on both stores: the key, the replica's status (a
/// global admin's), the model's plots, subjects searched by id prefix.
async fn console_api(db: &str) {
    let k = keys(db).await;
    let s = Server::start(db, &[]).await;
    let c = Client::new();
    let get = |path: &str, key: &str| c.get(s.url(path)).bearer_auth(key);
    let (st, who) = send(get("/v1/whoami", &k.enroll)).await;
    assert_eq!(st, StatusCode::OK, "{who}");
    assert_eq!(who["gallery_id"], "default");
    assert_eq!(who["global"], false);
    assert_eq!(who["roles"], json!(["read", "enroll"]));
    assert_eq!(who["scores"], "full");
    let (_, who) = send(get("/v1/whoami", &k.admin)).await;
    assert_eq!(
        (who["global"].clone(), who["roles"].clone()),
        (json!(true), json!(["admin"]))
    );
    for (request, status) in [
        (c.get(s.url("/v1/whoami")), 401),
        (get("/v1/whoami", "dvsp_x_y"), 401),
    ] {
        assert_error(&send(request).await, status);
    }

    let (st, status) = send(get("/v1/status", &k.admin)).await;
    assert_eq!(st, StatusCode::OK, "{status}");
    assert_eq!(status["ready"], true);
    assert_eq!(status["model_id"], s.state.lineup().serving.card.model_id);
    assert_eq!(status["queue_depth"], 0);
    // The whoami calls above were answered and counted.
    assert!(status["requests_total"].as_u64().unwrap() >= 4, "{status}");
    assert_eq!(status["server_errors_total"], 0);
    let (_, again) = send(get("/v1/status", &k.admin)).await;
    assert!(again["requests_total"].as_u64() > status["requests_total"].as_u64());
    // A gallery's keys, its admin included, do not see the replica's counters.
    let gallery_admin = key_with(db, &[Role::Admin], Some("default"), ScorePolicy::Full).await;
    for key in [&k.enroll, &k.verify, &gallery_admin] {
        assert_error(&send(get("/v1/status", key)).await, 403);
    }

    let (st, model) = send(get("/v1/model", &k.verify)).await;
    assert_eq!(st, StatusCode::OK);
    let plots: Vec<&str> = model["plots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(plots.contains(&"det.png"), "{plots:?}");
    let r = get("/v1/model/plots/det.png", &k.verify)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "image/png");
    let png = r.bytes().await.unwrap();
    let on_disk = std::fs::read(common::model().join("det.png")).unwrap();
    assert_eq!(&png[..], &on_disk[..]);
    for bad in [
        "model.json",
        "model.safetensors",
        "..%2Fserver-model%2Fdet.png",
        "%2E%2E%2Fdet.png",
        "det.svg",
        "nope.png",
        "det.png%00",
    ] {
        let r = send(get(&format!("/v1/model/plots/{bad}"), &k.verify)).await;
        assert_error(&r, 404);
    }
    assert_error(&send(c.get(s.url("/v1/model/plots/det.png"))).await, 401);
    // The adversarial grid shows evaluation images: admins only, and not listed to others.
    let grid = common::model().join("adversarial.png");
    // (A copy of det.png stood in for it once: replaced by a real grid.)
    let det = std::fs::read(common::model().join("det.png")).unwrap();
    if std::fs::read(&grid).map_or(true, |g| g == det) {
        adversarial_grid(&common::model(), &grid);
    }
    let listed = |model: &Value| {
        model["plots"]
            .as_array()
            .unwrap()
            .contains(&json!("adversarial.png"))
    };
    let (_, model) = send(get("/v1/model", &k.verify)).await;
    assert!(!listed(&model), "{model}");
    assert_error(
        &send(get("/v1/model/plots/adversarial.png", &k.verify)).await,
        403,
    );
    let (_, model) = send(get("/v1/model", &gallery_admin)).await;
    assert!(listed(&model), "{model}");
    let r = get("/v1/model/plots/adversarial.png", &gallery_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    // Search by id prefix: exact and case-sensitive on both stores, `_` and `%` are not
    // wildcards, and it pages like the plain listing.
    for id in ["al-1", "al-2", "alan", "Al-3", "bob", "a_x", "abx", "a%y"] {
        let r = send(
            c.post(s.url("/v1/subjects"))
                .bearer_auth(&k.enroll)
                .json(&json!({ "id": id })),
        )
        .await;
        if id.contains('%') {
            assert_error(&r, 422);
        } else {
            assert_eq!(r.0, StatusCode::CREATED, "{id}: {:?}", r.1);
        }
    }
    let ids = |page: &Value| -> Vec<String> {
        page["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let search = |q: &str| get(&format!("/v1/subjects?{q}"), &k.verify);
    let (_, page) = send(search("prefix=al")).await;
    assert_eq!(ids(&page), ["al-1", "al-2", "alan"]);
    let (_, page) = send(search("prefix=a_")).await;
    assert_eq!(ids(&page), ["a_x"]);
    let (_, page) = send(search("prefix=Al")).await;
    assert_eq!(ids(&page), ["Al-3"]);
    let (_, page) = send(search("prefix=al-&limit=1")).await;
    assert_eq!(
        (ids(&page), page["next_after"].clone()),
        (vec!["al-1".to_string()], json!("al-1"))
    );
    let (_, page) = send(search("prefix=al-&limit=1&after=al-1")).await;
    assert_eq!(ids(&page), ["al-2"]);
    let (_, page) = send(search("prefix=zz")).await;
    assert_eq!(ids(&page), Vec::<String>::new());
    let (_, page) = send(search("prefix=")).await;
    assert_eq!(ids(&page).len(), 7);
    for bad in [
        "prefix=a%25",
        "prefix=a%00",
        &format!("prefix={}", "a".repeat(129)),
    ] {
        assert_error(&send(search(bad)).await, 422);
    }
    s.stop().await;
}

on_both_stores!(console_api);

/// chromedriver on a free loopback port, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (Debian chromium-driver; `make test` installs it: scripts/chromium.sh)");
        let url = format!("http://127.0.0.1:{port}");
        let c = Client::new();
        common::within(Duration::from_secs(20), "chromedriver to start", || async {
            c.get(format!("{url}/status")).send().await.is_ok()
        })
        .await;
        Driver { child, url }
    }

    async fn browser(&self) -> Browser {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1100,900"],
            }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The page's state for the accessibility checks: controls without a label, buttons without
/// a name, and how far the page is wider than the window.
const PAGE_CHECK: &str = r#"
const unlabelled = [...document.querySelectorAll('input, select, textarea')]
  .filter(e => e.labels.length === 0 && !e.getAttribute('aria-label'))
  .map(e => e.id || e.name || e.outerHTML);
const unnamed = [...document.querySelectorAll('button, a')]
  .filter(e => !e.textContent.trim() && !e.getAttribute('aria-label'))
  .map(e => e.outerHTML);
const d = document.documentElement;
return { unlabelled, unnamed, overflow: d.scrollWidth - d.clientWidth,
         styled: document.querySelectorAll('[style]').length };
"#;

struct Operator {
    b: Browser,
    base: String,
    shots: Option<PathBuf>,
}

impl Operator {
    async fn open(&self, route: &str) {
        self.b
            .goto(&format!("{}/console/#/{route}", self.base))
            .await
            .unwrap();
    }

    /// Waits for an element with exactly `text` under `css`.
    async fn text(&self, css: &str, text: &str) -> fantoccini::elements::Element {
        let xpath = css_text_xpath(css, text);
        self.wait(Locator::XPath(&xpath), &format!("{css} with text {text:?}"))
            .await
    }

    async fn css(&self, css: &str) -> fantoccini::elements::Element {
        self.wait(Locator::Css(css), css).await
    }

    /// Waits up to 30 s for `what`; on a timeout the panic shows the page's text.
    async fn wait(&self, at: Locator<'_>, what: &str) -> fantoccini::elements::Element {
        match self
            .b
            .wait()
            .at_most(Duration::from_secs(30))
            .for_element(at)
            .await
        {
            Ok(e) => e,
            Err(e) => {
                let page = match self.b.find(Locator::Css("body")).await {
                    Ok(b) => b.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("no {what}: {e}\n--- the page ---\n{page}")
            }
        }
    }

    async fn body(&self) -> String {
        self.css("body").await.text().await.unwrap()
    }

    /// Every control labelled, every button named, nothing wider than the window.
    async fn check_page(&self, what: &str) {
        let v = self.b.execute(PAGE_CHECK, vec![]).await.unwrap();
        assert_eq!(v["unlabelled"], json!([]), "{what}: unlabelled controls");
        assert_eq!(v["unnamed"], json!([]), "{what}: unnamed buttons or links");
        assert!(
            v["overflow"].as_i64().unwrap() <= 0,
            "{what}: wider than the window: {v}"
        );
        assert_eq!(v["styled"], 0, "{what}: inline style attributes");
    }

    async fn shot(&self, name: &str) {
        if let Some(dir) = &self.shots {
            std::fs::create_dir_all(dir).unwrap();
            // The window as tall as the page (up to 2000 px), then back.
            let (w, h) = self.b.get_window_size().await.unwrap();
            let (w, h) = (w as u32, h as u32);
            let page = self
                .b
                .execute("return document.documentElement.scrollHeight", vec![])
                .await
                .unwrap();
            let tall = (page.as_u64().unwrap() as u32 + 160).clamp(h, 2000);
            self.b.set_window_size(w, tall).await.unwrap();
            let png = self.b.screenshot().await.unwrap();
            self.b.set_window_size(w, h).await.unwrap();
            std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
        }
    }

    async fn sign_in(&self, key: &str) {
        self.open("subjects").await;
        let field = self.css("#key").await;
        field.clear().await.unwrap();
        // Keyboard only: Enter in the field submits the form.
        field.send_keys(&format!("{key}\u{E007}")).await.unwrap();
    }

    async fn sign_out(&self) {
        self.text("button", "Sign out").await.click().await.unwrap();
        self.css("#key").await;
    }

    async fn upload(&self, input: &str, files: &[&Path]) {
        let paths: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
        self.css(input)
            .await
            .send_keys(&paths.join("\n"))
            .await
            .unwrap();
    }
}

/// An XPath for the elements `css` (`tag`, `tag#id` or `tag.class`) whose whole text is
/// `text`.
fn css_text_xpath(css: &str, text: &str) -> String {
    let (tag, cond) = match (css.split_once('#'), css.split_once('.')) {
        (Some((tag, id)), _) => (tag, format!(" and @id='{id}'")),
        (None, Some((tag, class))) => (
            tag,
            format!(" and contains(concat(' ', @class, ' '), ' {class} ')"),
        ),
        (None, None) => (css, String::new()),
    };
    let tag = if tag.is_empty() { "*" } else { tag };
    format!("//{tag}[normalize-space(.)='{text}'{cond}]")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_works_the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("b.db").display());
    let k = keys(&db).await;
    let s = Server::start(&db, &[]).await;
    let file = |name: &str, png: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, png).unwrap();
        p
    };
    let threes = digits(3, 3);
    let (three_a, three_b, three_c) = (
        file("three-a.png", &threes[0]),
        file("three-b.png", &threes[1]),
        file("three-c.png", &threes[2]),
    );
    let seven = file("seven.png", &digits(7, 1)[0]);
    let not_an_image = file("notes.txt", b"not an image");

    let driver = Driver::start().await;
    let op = Operator {
        b: driver.browser().await,
        base: s.base.clone(),
        shots: std::env::var_os("DVSP_SCREENSHOTS").map(PathBuf::from),
    };

    // A wrong key: the API's 401 message, and no way in.
    op.sign_in("dvsp_0123456789abcdef_wrong").await;
    let err = op.css("div.error").await.text().await.unwrap();
    assert!(
        err.contains("401") && err.contains("invalid or revoked API key"),
        "{err}"
    );
    op.check_page("sign-in").await;
    op.shot("sign-in").await;

    // A global admin (default gallery): create a subject, enroll two digits at once.
    op.sign_in(&k.admin).await;
    op.text("h1", "Subjects").await;
    // From here on the document is never reloaded (the pages are fragments): every
    // Content-Security-Policy violation of every page is recorded.
    op.b.execute(
        "window.cspViolations = []; document.addEventListener('securitypolicyviolation', \
         e => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI)); return true",
        vec![],
    )
    .await
    .unwrap();
    op.css("#new-id").await.send_keys("alice").await.unwrap();
    op.css("#new-name").await.send_keys("Alice").await.unwrap();
    op.text("button", "Create subject")
        .await
        .click()
        .await
        .unwrap();
    op.text("div.notice", "Created subject alice.").await;
    // A second time: the API's 409, shown.
    op.css("#new-id").await.send_keys("alice").await.unwrap();
    op.text("button", "Create subject")
        .await
        .click()
        .await
        .unwrap();
    let err = op.css("div.error").await.text().await.unwrap();
    assert!(
        err.contains("409") && err.contains("already exists"),
        "{err}"
    );
    op.open("subjects/alice").await;
    op.text("h1", "Subject alice").await;
    op.text("td", "No templates yet: enroll a photo below.")
        .await;
    op.upload("#enroll-files", &[&three_a, &three_b, &not_an_image])
        .await;
    op.wait(
        Locator::XPath(
            "//ul[@id='enroll-results' and count(.//span[@class='ok'])=2 and count(.//span[@class='bad'])=1]",
        ),
        "two enrolled and one refused",
    )
    .await;
    let results = op.css("#enroll-results").await.text().await.unwrap();
    assert!(results.contains("three-a.png: enrolled as"), "{results}");
    assert!(results.contains("three-b.png: enrolled as"), "{results}");
    assert!(
        results.contains("notes.txt: 415 content type \"text/plain\""),
        "{results}"
    );
    op.wait(
        Locator::XPath("//table[@id='templates' and count(.//tbody/tr)=2]"),
        "two templates",
    )
    .await;
    let table = op.css("#templates").await.text().await.unwrap();
    assert!(
        table.contains(&s.state.lineup().serving.card.model_id),
        "{table}"
    );
    op.check_page("subject").await;
    op.shot("subject").await;

    // Search.
    op.open("subjects").await;
    op.css("#prefix")
        .await
        .send_keys("ali\u{E007}")
        .await
        .unwrap();
    op.text("td", "Alice").await;
    op.check_page("subjects").await;
    op.shot("subjects").await;

    // Verify: a third '3' matches, a '7' does not.
    op.open("verify").await;
    op.css("#subject").await.send_keys("alice").await.unwrap();
    op.upload("#probe", &[&three_c]).await;
    op.text("button", "Verify").await.click().await.unwrap();
    op.text("p#decision", "Match").await;
    let panel = op.body().await;
    assert!(
        panel.contains("best of 2 templates") && panel.contains("similarity"),
        "{panel}"
    );
    // The bar: the similarity's fill reaches past the threshold's mark (a match).
    let bar = op.css("svg.bar").await;
    assert!(bar.is_displayed().await.unwrap());
    let num = async |css: &str, attr: &str| -> f64 {
        let e = op.css(css).await;
        e.attr(attr).await.unwrap().unwrap().parse().unwrap()
    };
    let fill_end = num("svg.bar rect.fill", "x").await + num("svg.bar rect.fill", "width").await;
    assert!(fill_end >= num("svg.bar line.threshold", "x1").await);
    op.check_page("verify").await;
    op.shot("verify").await;
    op.upload("#probe", &[&seven]).await;
    op.text("button", "Verify").await.click().await.unwrap();
    op.text("p#decision", "No match").await;

    // Identify.
    op.open("identify").await;
    op.upload("#identify-probe", &[&three_c]).await;
    op.text("button", "Identify").await.click().await.unwrap();
    op.text("p#identify-decision", "Match: alice").await;
    // The top candidate's row: rank 1, alice, similarity and distance (full scores for this
    // key) summing to 1, a match.
    let row = op.css("#candidates tbody tr").await.text().await.unwrap();
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        (cells[0], cells[1], cells[4]),
        ("1", "alice", "yes"),
        "{row}"
    );
    let (sim, dist): (f64, f64) = (cells[2].parse().unwrap(), cells[3].parse().unwrap());
    assert!((sim + dist - 1.0).abs() < 2e-4, "{row}");
    op.check_page("identify").await;
    op.shot("identify").await;

    // The model page: its card, operating points and the DET curve, loaded.
    op.open("model").await;
    op.css("img[data-plot='det.png']").await;
    common::within(Duration::from_secs(10), "the DET image to load", || async {
        let w = op
            .b
            .execute(
                "const i = document.querySelector(\"img[data-plot='det.png']\"); return i.complete ? i.naturalWidth : 0",
                vec![],
            )
            .await
            .unwrap();
        w.as_i64().unwrap() > 0
    })
    .await;
    let body = op.body().await;
    assert!(
        body.contains(&s.state.lineup().serving.card.model_id) && body.contains("EER"),
        "{body}"
    );
    op.check_page("model").await;
    op.shot("model").await;

    // Health: readiness and the replica's counters (a global admin's).
    op.open("health").await;
    op.text("p#readiness", "Ready").await;
    let status = op.css("#status").await.text().await.unwrap();
    assert!(
        status.contains("Inference queue") && status.contains("waiting"),
        "{status}"
    );
    op.wait(
        Locator::XPath("//dd[contains(., 'requests/s')]"),
        "a request rate",
    )
    .await;
    op.check_page("health").await;
    op.shot("health").await;

    // A verifier's key: creating, enrolling and deleting are disabled, with the reason.
    op.sign_out().await;
    op.sign_in(&k.verify).await;
    op.text("h1", "Subjects").await;
    op.text("td", "Alice").await;
    let create = op.text("button", "Create subject").await;
    assert!(!create.is_enabled().await.unwrap());
    let delete = op.css("button[aria-label='Delete alice']").await;
    assert!(!delete.is_enabled().await.unwrap());
    let body = op.body().await;
    for reason in [
        "Needs the enroll role; this key has verify, identify, read.",
        "Deleting needs the admin role; this key has verify, identify, read.",
    ] {
        assert!(body.contains(reason), "{reason} not in {body}");
    }
    op.open("subjects/alice").await;
    op.css("#templates").await;
    assert!(!op.css("#enroll-files").await.is_enabled().await.unwrap());
    let body = op.body().await;
    assert!(
        body.contains("Deleting templates needs the admin role"),
        "{body}"
    );
    // The key is in this tab's sessionStorage, not in a cookie, local storage or the URL.
    let kept = op
        .b
        .execute(
            "return [sessionStorage.getItem('dvsp.key'), document.cookie, localStorage.length, location.href]",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(kept[0], json!(k.verify));
    assert_eq!((kept[1].clone(), kept[2].clone()), (json!(""), json!(0)));
    assert!(!kept[3].as_str().unwrap().contains(&k.verify));
    op.sign_out().await;
    op.sign_in(&k.admin).await;
    op.text("h1", "Subjects").await;

    // 400 px wide: every page fits, with its content loaded.
    op.b.set_window_size(400, 860).await.unwrap();
    for (route, heading, content) in [
        ("subjects", "Subjects", "#subjects"),
        ("subjects/alice", "Subject alice", "#templates"),
        ("model", "Model", "img[data-plot='det.png']"),
        ("health", "Health", "#status"),
    ] {
        op.open(route).await;
        op.text("h1", heading).await;
        op.css(content).await;
        op.check_page(&format!("{route} at 400 px")).await;
    }
    op.open("verify").await;
    op.css("#subject").await.send_keys("alice").await.unwrap();
    op.upload("#probe", &[&three_c]).await;
    op.text("button", "Verify").await.click().await.unwrap();
    op.text("p#decision", "Match").await;
    op.check_page("verify at 400 px").await;
    op.shot("verify-400px").await;
    op.open("identify").await;
    op.upload("#identify-probe", &[&three_c]).await;
    op.text("button", "Identify").await.click().await.unwrap();
    op.css("#candidates").await;
    op.check_page("identify at 400 px").await;
    op.open("subjects").await;
    op.text("td", "Alice").await;
    op.shot("subjects-400px").await;
    op.b.set_window_size(1100, 900).await.unwrap();

    // Delete, with a confirmation that can be cancelled.
    op.open("subjects").await;
    op.css("button[aria-label='Delete alice']")
        .await
        .click()
        .await
        .unwrap();
    op.text("button", "Cancel").await.click().await.unwrap();
    op.css("button[aria-label='Delete alice']")
        .await
        .click()
        .await
        .unwrap();
    op.text("button", "Delete alice")
        .await
        .click()
        .await
        .unwrap();
    op.text("div.notice", "Deleted subject alice and its templates.")
        .await;
    let c = Client::new();
    let (st, _) = send(c.get(s.url("/v1/subjects/alice")).bearer_auth(&k.admin)).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let violations =
        op.b.execute("return window.cspViolations", vec![])
            .await
            .unwrap();
    assert_eq!(violations, json!([]), "Content-Security-Policy violations");

    op.b.close().await.unwrap();
    drop(driver);
    s.stop().await;
}

/// A real Figure-5 grid of the model: a '3' attacked towards a '7' and back by the audit's
/// ensemble (`dvsp audit --probe --target`; original, adversarial, amplified perturbation,
/// target), saved as the model's `adversarial.png`.
fn adversarial_grid(model: &Path, grid: &Path) {
    let args = dvsp_core::audit::outputs::AuditArgs::from_argv(["audit"]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (probe, target) = (dir.path().join("3.png"), dir.path().join("7.png"));
    std::fs::write(&probe, &digits(3, 1)[0]).unwrap();
    std::fs::write(&target, &digits(7, 1)[0]).unwrap();
    // Pair mode writes attack_pair.{json,png} into the model directory; the grid is kept
    // under the name the console shows, the pair files are not left behind.
    let pairs = dvsp_core::audit::outputs::audit_pair(model, &probe, &target, 0, &args).unwrap();
    assert!(
        pairs.iter().all(|p| p.distance_after <= p.threshold),
        "{pairs:?}"
    );
    std::fs::rename(model.join("attack_pair.png"), grid).unwrap();
    std::fs::remove_file(model.join("attack_pair.json")).unwrap();
}
