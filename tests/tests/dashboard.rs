//! The dashboard (`/ui/`), the JSON controls and submits, `/events`, and the
//! checks that keep other sites out: over plain HTTP first, then in a real
//! browser (Debian's Chromium through chromedriver), one session for the whole
//! story: submit through the form, watch the job appear and move without a
//! reload, Stop / Start / Terminate (with its confirmation), hostile strings,
//! the banner when the daemon goes away and comes back, and the login form.

use jobd_tests::browser::Browser;
use jobd_tests::http::{HttpResponse, Multipart, Shim, SseStream};
use jobd_tests::*;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const JSON: &str = "application/json; charset=utf-8";
/// What a page of another site sends.
const EVIL: &str = "http://evil.example";
/// A team name (and a date) that would run script if pasted into the page as markup.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\">";

#[track_caller]
fn job_of(resp: &HttpResponse, status: u16) -> Value {
    assert_eq!(
        (resp.status, resp.header("content-type")),
        (status, Some(JSON)),
        "{resp}"
    );
    resp.json()
}

fn post_form(shim: &Shim, form: Multipart, headers: &[(&str, &str)]) -> HttpResponse {
    let ct = form.content_type();
    let mut h = vec![("Content-Type", ct.as_str())];
    h.extend_from_slice(headers);
    shim.request("POST", "/jobs", &h, &form.body())
}

fn csp_of(resp: &HttpResponse) -> String {
    resp.header("content-security-policy")
        .unwrap_or_else(|| panic!("no CSP: {resp}"))
        .to_string()
}

/// Every dashboard answer forbids script from anywhere but this origin, and
/// inline script; pages are server-rendered.
#[test]
fn pages_render_on_the_server_with_a_csp() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let id = d.bulk_team(b"team,m1\nred,ann\n", None);
    d.wait_completed(&id);
    let list = shim.get("/ui/");
    assert_eq!(list.status, 200, "{list}");
    assert_eq!(
        list.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = list.text();
    assert!(html.contains(&id), "the list names the job: {html}");
    for label in ["CSV file", "From", "To"] {
        assert!(html.contains(&format!(">{label}</label>")), "no {label}");
    }
    let job = shim.get(&format!("/ui/jobs/{id}"));
    assert_eq!(job.status, 200, "{job}");
    for button in ["Stop", "Start", "Terminate"] {
        assert!(
            job.text().contains(&format!(">{button}</button>")),
            "{button}"
        );
    }
    let script = html
        .split("<script src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("a script tag");
    let js = shim.get(script);
    assert_eq!(js.status, 200, "{js}");
    for resp in [
        &list,
        &job,
        &js,
        &shim.get("/ui/jobs/nope"),
        &shim.get("/ui/rows"),
    ] {
        let csp = csp_of(resp);
        assert!(csp.contains("script-src 'self'"), "{csp}");
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert_eq!(resp.header("x-content-type-options"), Some("nosniff"));
    }
    assert!(
        !html.contains("<script>") && !html.contains("style=\""),
        "inline script or style: {html}"
    );
    // Nothing comes from another host.
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "{html}"
    );
    // The legacy answer for `/` stays.
    shim.get("/")
        .expect(404, "text/plain", "404 page not found");
    assert_eq!(shim.get("/ui").status, 301);
}

/// `POST /jobs` (multipart with the kind first, JSON, a form) and
/// `POST /jobs/{id}/stop|start|terminate`.
#[test]
fn json_submits_and_controls() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let f = slow_baseline(5);
    let form = Multipart::new()
        .field("kind", "baselineCSV")
        .field("rate", &SLOW_RATE.to_string())
        .file("file", "slow.csv", &f.bytes());
    let resp = post_form(&shim, form, &[]);
    let job = job_of(&resp, 201);
    let id = job["id"].as_str().expect("id").to_string();
    assert_eq!(job["kind"], "baselineCSV");
    assert_eq!(job["total"], SLOW_ROWS as u64, "the total is known at once");
    assert_eq!(
        resp.header("location"),
        Some(format!("/jobs/{id}").as_str())
    );
    d.wait_processed(&id, MID_RUN);

    let stop = shim.post(&format!("/jobs/{id}/stop"), None, b"");
    assert_eq!(job_of(&stop, 200)["state"], "paused");
    assert_eq!(d.status_json(&id)["state"], "paused");
    let start = shim.post(&format!("/jobs/{id}/start"), None, b"");
    let state = job_of(&start, 200)["state"].clone();
    assert!(state == "running" || state == "queued", "{state}");
    let term = shim.post(&format!("/jobs/{id}/terminate"), None, b"");
    assert_eq!(job_of(&term, 200)["state"], "terminated");
    shim.post(&format!("/jobs/{id}/stop"), None, b"")
        .expect_error(409, "job_finished");
    shim.post("/jobs/nope/stop", None, b"")
        .expect_error(404, "id_doesn't_exist");
    shim.post(&format!("/jobs/{id}/pause"), None, b"").expect(
        404,
        "text/plain",
        "404 page not found",
    );

    // Exports: JSON, and a browser form without JavaScript (sent on to the page).
    let ex = shim.post(
        "/jobs",
        Some("application/json"),
        br#"{"from":"2024-01-01","to":"2024-01-10"}"#,
    );
    assert_eq!(job_of(&ex, 201)["total"], 10);
    shim.post(
        "/jobs",
        Some("application/json"),
        br#"{"from":"2024-01-10","to":"2024-01-01"}"#,
    )
    .expect_error(400, "invalid_date_range");
    shim.post("/jobs", Some("application/json"), b"{")
        .expect_error(400, "invalid_json");
    let html_form = shim.request(
        "POST",
        "/jobs",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Accept", "text/html"),
        ],
        b"from=2024-02-01&to=2024-02-02&rate=",
    );
    assert_eq!(html_form.status, 303, "{html_form}");
    let to = html_form.header("location").expect("location");
    assert!(
        to.starts_with("/ui/jobs/") && to.contains("createExport"),
        "{to}"
    );

    // The kind must come before the file (the file streams straight through).
    let late = Multipart::new()
        .file("file", "t.csv", b"team\nred\n")
        .field("kind", "bulkTeam");
    post_form(&shim, late, &[]).expect_error(400, "bad_request");
    let bad = Multipart::new()
        .field("kind", "nope")
        .file("file", "t.csv", b"team\nred\n");
    post_form(&shim, bad, &[]).expect_error(400, "bad_request");
    // Row errors, one page at a time.
    let errs = d.upload(b"date,x\nx,1\ny,2\nz,3\n", None);
    d.wait_completed(&errs);
    let page = shim.get(&format!("/jobs/{errs}/errors?after=1&limit=1"));
    let rows: Vec<u64> = job_of(&page, 200)
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["row"].as_u64().expect("row"))
        .collect();
    assert_eq!(rows, [2]);
}

/// Revert from the dashboard: a button on finished imports only, a confirmation
/// without JavaScript, the form sent back to the job's page, the state filter,
/// and no revert from another site.
#[test]
fn the_dashboard_reverts_after_asking() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let id = d.bulk_team(b"team,m1\nred,ann\nblue,bob\n", None);
    d.wait_completed(&id);
    let export = d.export("2024-01-01", "2024-01-01", None);
    d.wait_completed(&export);
    let running = d.upload(&slow_baseline(8).bytes(), Some(SLOW_RATE));
    d.wait_processed(&running, 1);
    let page = |id: &str, q: &str| {
        let r = shim.get(&format!("/ui/jobs/{id}{q}"));
        assert_eq!(r.status, 200, "{r}");
        r.text()
    };
    let enabled = r#"data-control="revert" class="danger">Revert</button>"#;
    let disabled = r#"data-control="revert" class="danger" disabled>Revert</button>"#;
    assert!(page(&id, "").contains(enabled), "{}", page(&id, ""));
    assert!(page(&running, "").contains(disabled));
    assert!(
        !page(&export, "").contains(">Revert</button>"),
        "an export has no Revert"
    );
    let asked = page(&id, "?confirm=revert");
    assert!(
        asked.contains(&format!(r#"action="/jobs/{id}/revert""#)),
        "{asked}"
    );
    assert!(asked.contains(">Yes, revert</button>"), "{asked}");

    let evil = shim.request(
        "POST",
        &format!("/jobs/{id}/revert"),
        &[("Origin", EVIL)],
        b"",
    );
    evil.expect_error(403, "cross_origin");
    assert_eq!(d.status_json(&id)["state"], "completed");

    let form = shim.request(
        "POST",
        &format!("/jobs/{id}/revert"),
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(form.status, 303, "{form}");
    assert_eq!(
        form.header("location"),
        Some(format!("/ui/jobs/{id}").as_str())
    );
    assert_eq!(d.status_json(&id)["state"], "reverted");
    assert!(page(&id, "").contains(disabled));
    let list = shim.get("/ui/?state=reverted").text();
    assert!(
        list.contains(r#"<option value="reverted" selected>"#),
        "{list}"
    );
    assert!(list.contains(&id) && !list.contains(&running), "{list}");
    // A second revert from a form comes back with the reason.
    let again = shim.request(
        "POST",
        &format!("/jobs/{id}/revert"),
        &[("Accept", "text/html")],
        b"",
    );
    assert_eq!(again.status, 303, "{again}");
    assert!(
        again
            .header("location")
            .is_some_and(|l| l.contains("already_reverted")),
        "{again}"
    );
}

/// A state-changing request from a page of another site is refused and changes
/// nothing; scripts without an Origin are served.
#[test]
fn other_sites_cannot_change_anything() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let id = d.upload(&slow_baseline(7).bytes(), Some(SLOW_RATE));
    d.wait_processed(&id, 1);
    let jobs_before = d.status_all().len();
    let stop = format!("/jobs/{id}/stop");
    let legacy = format!("/updateTask?id={id}&action=stop");
    type Attempt<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
    let attempts: [Attempt; 5] = [
        ("POST", &stop, vec![("Origin", EVIL)]),
        ("POST", &stop, vec![("Origin", "null")]),
        ("POST", &stop, vec![("Sec-Fetch-Site", "cross-site")]),
        // Another port of this host is another origin.
        ("POST", &stop, vec![("Origin", "http://127.0.0.1:1")]),
        ("GET", &legacy, vec![("Sec-Fetch-Site", "cross-site")]),
    ];
    for (method, target, headers) in &attempts {
        shim.request(method, target, headers, b"")
            .expect_error(403, "cross_origin");
    }
    let form = Multipart::new()
        .field("kind", "bulkTeam")
        .file("file", "t.csv", b"team\nred\n");
    post_form(&shim, form, &[("Origin", EVIL)]).expect_error(403, "cross_origin");
    shim.request("POST", "/uploadCSV", &[("Origin", EVIL)], b"")
        .expect_error(403, "cross_origin");
    assert_eq!(d.status_json(&id)["state"], "running", "nothing changed");
    assert_eq!(d.status_all().len(), jobs_before, "no job was created");

    // A browser on a name that is not loopback (DNS rebinding) gets nothing.
    let rebound = |extra: &str| {
        let mut conn = shim.connect();
        let head = format!(
            "GET /ui/ HTTP/1.1\r\nHost: rebound.evil.example:8081\r\n{extra}Connection: close\r\n\r\n"
        );
        std::io::Write::write_all(&mut conn, head.as_bytes()).expect("send");
        jobd_tests::http::read_response(&mut std::io::BufReader::new(conn), "GET")
    };
    rebound("Sec-Fetch-Site: same-origin\r\n").expect_error(403, "invalid_host");
    // Not a browser: served whatever Host it names (as the legacy API always was).
    assert_eq!(rebound("").status, 200);

    // Same origin, and no Origin at all (curl), are served.
    // (The harness's requests name `Host: localhost`.)
    let r = shim.request("POST", &stop, &[("Origin", "http://localhost")], b"");
    assert_eq!(job_of(&r, 200)["state"], "paused");
    let r = shim.post(&format!("/jobs/{id}/start"), None, b"");
    assert_eq!(r.status, 200, "{r}");
}

/// `/events`: a hello, then every change of every job, new jobs included.
#[test]
fn events_stream_every_job() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let mut events = SseStream::open(&shim, "/events");
    assert_eq!(events.status, 200);
    let hello = events.next_event().expect("hello");
    assert_eq!(hello.event, "hello");
    // Subscribed once the daemon is up: then submit.
    if hello.data.contains("connecting") {
        let up = events.next_event().expect("daemon up");
        assert_eq!(
            (up.event.as_str(), up.data.as_str()),
            ("daemon", "{\"up\":true}")
        );
    }
    let a = d.bulk_team(b"team\nred\nblue\n", None);
    let b = d.export("2024-01-01", "2024-01-02", None);
    let deadline = Instant::now() + DEADLINE;
    let mut done = std::collections::HashSet::new();
    while done.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "not every job completed in the stream"
        );
        let e = events.next_event().expect("an event");
        assert_eq!(e.event, "job", "{e:?}");
        let job: Value = serde_json::from_str(&e.data).expect("JSON");
        if job["state"] == "completed" {
            done.insert(job["id"].as_str().expect("id").to_string());
        }
    }
    assert!(done.contains(&a) && done.contains(&b), "{done:?}");
}

/// Row error messages quote CSV fields: they are shown as text, never as markup.
#[test]
fn hostile_strings_are_escaped_in_pages() {
    let d = Daemon::start();
    let shim = Shim::start(&d, &[]);
    let teams = format!(
        "team,m1\n\"{q}\",a\n\"{q}\",b\n",
        q = XSS.replace('"', "\"\"")
    );
    let id = d.bulk_team(teams.as_bytes(), None);
    d.wait_completed(&id);
    assert_eq!(d.errors(&id).len(), 1, "the second team is a row error");
    let html = shim.get(&format!("/ui/jobs/{id}")).text();
    assert!(!html.contains("<img"), "markup from a CSV field: {html}");
    assert!(html.contains("&#60;img src=x onerror="), "{html}");
}

fn out_dir(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(test)
}

/// The whole story in a real browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_browser() {
    let out = out_dir("dashboard-in-a-browser");
    let Some(browser) = Browser::start("in_a_browser", &out).await else {
        return;
    };
    let mut d = tokio::task::spawn_blocking(Daemon::start)
        .await
        .expect("daemon");
    let shim = Shim::start(&d, &[]);
    let base = format!("http://127.0.0.1:{}", shim.addr.port());
    let list_url = format!("{base}/ui/");
    let slow = d.input_file(&slow_baseline(21).bytes());
    let teams = d.input_file(
        format!(
            "team,m1\n\"{q}\",a\n\"{q}\",b\nplain,c\n",
            q = XSS.replace('"', "\"\"")
        )
        .as_bytes(),
    );
    let job_url = std::sync::Mutex::new(list_url.clone());
    let pages = [("list", list_url.clone())];
    browser
        .check(&pages, async {
            story(&browser, &mut d, &base, &slow, &teams, &job_url).await;
        })
        .await;
    // A passing run leaves one screenshot of each page, for the README.
    browser.close().await;
}

async fn story(
    b: &Browser,
    d: &mut Daemon,
    base: &str,
    slow: &std::path::Path,
    teams: &std::path::Path,
    job_url: &std::sync::Mutex<String>,
) {
    use fantoccini::Locator;
    b.client
        .goto(&format!("{base}/ui/"))
        .await
        .expect("open /ui/");
    b.wait_js(
        "the list",
        "return document.querySelector('#jobs') !== null",
    )
    .await;
    // A mark that a reload would wipe out.
    b.js("window.__same = 'page'; return true").await;

    // Submit through the form: kind, rate, file, Upload.
    b.labelled("Rate (rows per second, optional)")
        .await
        .send_keys(&SLOW_RATE.to_string())
        .await
        .expect("type the rate");
    b.labelled("CSV file")
        .await
        .send_keys(&slow.display().to_string())
        .await
        .expect("choose the file");
    b.click_button("Upload").await;
    b.wait_js(
        "the new job in the list",
        "return document.querySelector('#job-rows tr[data-kind=baselineCSV]') !== null",
    )
    .await;
    let id = b
        .js("return document.querySelector('#job-rows tr[data-kind=baselineCSV]').dataset.id")
        .await
        .as_str()
        .expect("an id")
        .to_string();
    let count = format!("#job-rows tr[data-id='{id}'] [data-field=count]");
    // The total is known from the start; then the count moves, live.
    b.wait_js(
        "the total",
        &format!("return document.querySelector(\"{count}\").textContent.endsWith('/{SLOW_ROWS}')"),
    )
    .await;
    // Moved on from what the page first showed: pushed, not rendered.
    let shown = format!("parseInt(document.querySelector(\"{count}\").textContent)");
    let first = b
        .js(&format!("return {shown}"))
        .await
        .as_u64()
        .expect("a count");
    b.wait_js(
        "progress without a reload",
        &format!("return {shown} >= {}", first + MID_RUN),
    )
    .await;
    assert_eq!(
        b.js("return window.__same").await,
        "page",
        "the list reloaded"
    );
    b.save("list").await;

    // The job's page: Stop, Start, Terminate (asked to confirm).
    let url = format!("{base}/ui/jobs/{id}");
    *job_url.lock().expect("lock") = url.clone();
    b.client.goto(&url).await.expect("open the job");
    let state = "document.querySelector('#job [data-field=state]').textContent";
    b.wait_js("running", &format!("return {state} === 'running'"))
        .await;
    b.js("window.__same = 'job'; return true").await;
    b.click_button("Stop").await;
    let took = b
        .wait_js_within(
            "paused",
            &format!("return {state} === 'paused'"),
            Duration::from_secs(1),
        )
        .await;
    let d_ref: &Daemon = d;
    assert_eq!(
        d_ref.status_json(&id)["state"],
        "paused",
        "jobctl says paused"
    );
    eprintln!("stop: the page said paused after {took:?}");
    b.click_button("Start").await;
    b.wait_js("running again", &format!("return {state} === 'running'"))
        .await;
    b.save("job").await;
    // Terminate asks first: Cancel changes nothing.
    b.click_button("Terminate").await;
    b.wait_js(
        "the confirmation",
        "return document.querySelector('#confirm-dialog').open",
    )
    .await;
    b.click_button("Cancel").await;
    b.wait_js(
        "the dialog closed",
        "return !document.querySelector('#confirm-dialog').open",
    )
    .await;
    assert_ne!(d_ref.status_json(&id)["state"], "terminated");
    b.click_button("Terminate").await;
    b.wait_js(
        "the confirmation",
        "return document.querySelector('#confirm-dialog').open",
    )
    .await;
    b.click_button("Yes, terminate").await;
    b.wait_js("terminated", &format!("return {state} === 'terminated'"))
        .await;
    assert_eq!(d_ref.status_json(&id)["state"], "terminated");
    assert_eq!(
        b.js("return window.__same").await,
        "job",
        "the job page reloaded"
    );

    // Hostile strings: a team name with markup, quoted in a row error.
    b.client
        .goto(&format!("{base}/ui/"))
        .await
        .expect("open /ui/");
    b.wait_js(
        "the list",
        "return document.querySelector('#jobs') !== null",
    )
    .await;
    b.client
        .find(Locator::Css("#upload-kind"))
        .await
        .expect("kind")
        .select_by_value("bulkTeam")
        .await
        .expect("bulk team");
    b.labelled("CSV file")
        .await
        .send_keys(&teams.display().to_string())
        .await
        .expect("choose the file");
    b.click_button("Upload").await;
    b.wait_js(
        "the team job completed",
        "const r = document.querySelector('#job-rows tr[data-kind=bulkTeam]'); \
         return r !== null && r.dataset.state === 'completed'",
    )
    .await;
    b.client
        .find(Locator::Css("#job-rows tr[data-kind=bulkTeam] a"))
        .await
        .expect("the team job's link")
        .click()
        .await
        .expect("follow it");
    b.wait_js(
        "the row error",
        "const m = document.querySelector('.errors td.message'); \
         return m !== null && m.textContent.includes('<img src=x')",
    )
    .await;
    assert_eq!(
        b.js("return typeof window.__xss").await,
        "undefined",
        "script from a CSV field ran"
    );
    assert_eq!(
        b.js("return document.querySelectorAll('main img').length")
            .await,
        0
    );

    // The daemon goes away: a banner says so; it comes back: the banner says that.
    b.client
        .goto(&format!("{base}/ui/"))
        .await
        .expect("open /ui/");
    b.wait_js(
        "the list",
        "return document.querySelector('#jobs') !== null",
    )
    .await;
    tokio::task::block_in_place(|| d.sigterm_and_wait());
    b.wait_js(
        "the banner",
        "const b = document.querySelector('#banner'); \
         return !b.hidden && b.textContent.includes('daemon is unavailable')",
    )
    .await;
    b.save("banner").await;
    tokio::task::block_in_place(|| d.restart());
    b.wait_js(
        "the daemon back",
        "const b = document.querySelector('#banner'); \
         return !b.hidden && b.textContent.includes('daemon is back')",
    )
    .await;
}

/// With `--token-file`, the dashboard asks for a token, then keeps the session
/// in a cookie that scripts cannot read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_in_a_browser() {
    let out = out_dir("dashboard-login-in-a-browser");
    let Some(browser) = Browser::start("login_in_a_browser", &out).await else {
        return;
    };
    let d = tokio::task::spawn_blocking(Daemon::start)
        .await
        .expect("daemon");
    let token = "browser-token-7f3a9c1e5b2d4f60";
    let file = d.dir().join("tokens");
    std::fs::write(&file, format!("{token}\n")).expect("token file");
    let mut perm = std::fs::metadata(&file).expect("meta").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o600);
    std::fs::set_permissions(&file, perm).expect("chmod");
    let shim = Shim::start(&d, &["--token-file", file.to_str().expect("utf-8")]);
    let url = format!("http://127.0.0.1:{}/ui/", shim.addr.port());
    let b = &browser;
    browser
        .check(&[("login", url.clone())], async {
            b.client.goto(&url).await.expect("open /ui/");
            b.wait_js(
                "the login form",
                "return document.querySelector('#token') !== null",
            )
            .await;
            b.labelled("Token")
                .await
                .send_keys("not-the-token-0000000")
                .await
                .expect("type");
            b.click_button("Log in").await;
            b.wait_js(
                "a refusal",
                "return document.body.innerText.includes('not valid')",
            )
            .await;
            b.labelled("Token")
                .await
                .send_keys(token)
                .await
                .expect("type");
            b.click_button("Log in").await;
            b.wait_js(
                "the list",
                "return document.querySelector('#jobs') !== null",
            )
            .await;
            assert_eq!(
                b.js("return document.cookie").await,
                "",
                "the session cookie is HttpOnly"
            );
            // The live stream works with the session too.
            let id = tokio::task::block_in_place(|| d.bulk_team(b"team\nred\n", None));
            b.wait_js(
                "the new job, live",
                &format!("return document.querySelector(\"tr[data-id='{id}']\") !== null"),
            )
            .await;
        })
        .await;
    browser.close().await;
}
