//! A real browser for the dashboard's tests: Debian's Chromium driven over
//! WebDriver (`/usr/bin/chromedriver`, `fantoccini`), headless, with a fresh
//! profile and no network but loopback.
//!
//! Nothing is downloaded: `.ci/run` installs `chromium` and `chromium-driver`.
//! Without them a test fails under `CI=true`, and elsewhere is skipped with the
//! reason printed. [`Browser::check`] saves screenshots of the pages given into
//! the test's output directory when its steps fail.

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use serde_json::{json, Value};
use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long a page may take to show what a step waits for.
pub const UI_DEADLINE: Duration = Duration::from_secs(20);

pub struct Browser {
    pub client: Client,
    driver: Child,
    _profile: tempfile::TempDir,
    out: PathBuf,
}

/// Both programs are there, or why not; under `CI=true` their absence fails.
pub fn available(test: &str) -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).is_file())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let why = format!(
        "{} missing (apt-get install chromium chromium-driver; .ci/run does)",
        missing.join(" and ")
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test} needs a browser: {why}");
    }
    eprintln!("skipping {test}: {why}");
    false
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session; `out` is where
    /// screenshots go. `None` (printed) when the browser is not installed and
    /// this is not CI.
    pub async fn start(test: &str, out: &Path) -> Option<Browser> {
        if !available(test) {
            return None;
        }
        let mut driver = Command::new(CHROMEDRIVER)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            // Its own process group: dropping the browser kills Chromium too.
            .process_group(0)
            .spawn()
            .expect("start chromedriver");
        let stdout = driver.stdout.take().expect("chromedriver stdout");
        let port = tokio::task::spawn_blocking(move || {
            let mut lines = BufReader::new(stdout).lines();
            let port = lines.by_ref().map_while(Result::ok).find_map(|l| {
                l.split_once("started successfully on port ")
                    .and_then(|(_, p)| p.trim_end_matches('.').trim().parse::<u16>().ok())
            });
            // Keep draining, so chromedriver never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            port
        })
        .await
        .expect("read chromedriver's port")
        .expect("chromedriver did not say its port");
        let profile = tempfile::tempdir().expect("profile directory");
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        std::fs::create_dir_all(out).expect("screenshot directory");
        Some(Browser {
            client,
            driver,
            _profile: profile,
            out: out.to_path_buf(),
        })
    }

    /// Runs the test's `steps`; if they fail (panic), saves a screenshot of the
    /// page the browser shows, then one of each of `pages` (name, URL) — the list
    /// and a job page — before failing.
    pub async fn check<F>(&self, pages: &[(&str, String)], steps: F)
    where
        F: Future<Output = ()>,
    {
        let result = AssertUnwindSafe(steps).catch_unwind().await;
        let Err(panic) = result else {
            return;
        };
        self.save("failed-at").await;
        for (name, url) in pages {
            if self.client.goto(url).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                self.save(name).await;
            }
        }
        eprintln!("screenshots saved in {}", self.out.display());
        std::panic::resume_unwind(panic);
    }

    /// Saves a screenshot as `<out>/<name>.png`.
    pub async fn save(&self, name: &str) {
        match self.client.screenshot().await {
            Ok(png) => {
                let path = self.out.join(format!("{name}.png"));
                if let Err(e) = std::fs::write(&path, png) {
                    eprintln!("cannot save {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("no screenshot of {name}: {e}"),
        }
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("script {script:?} failed: {e}"))
    }

    /// Waits until `script` returns `true` in the page (polled), or fails saying `what`.
    pub async fn wait_js(&self, what: &str, script: &str) {
        self.wait_js_within(what, script, UI_DEADLINE).await;
    }

    /// As [`Browser::wait_js`], with a deadline; returns how long it took.
    pub async fn wait_js_within(&self, what: &str, script: &str, limit: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.js(script).await == Value::Bool(true) {
                return start.elapsed();
            }
            if start.elapsed() > limit {
                let text = self.js("return document.body.innerText").await;
                panic!("the page did not show {what} within {limit:?}; it shows:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }

    /// Clicks the button whose text is exactly `label` (as a person picks it):
    /// the first one shown, when hidden ones (a closed dialog's) have it too.
    pub async fn click_button(&self, label: &str) {
        let xpath = format!("//button[normalize-space(.)='{label}']");
        let buttons = self
            .client
            .find_all(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no button {label:?}: {e}"));
        let mut shown = None;
        for b in buttons {
            if b.is_displayed().await.unwrap_or(false) {
                shown = Some(b);
                break;
            }
        }
        shown
            .unwrap_or_else(|| panic!("no button {label:?} is shown"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {label:?}: {e}"));
    }

    /// The form control labelled `label` (through `<label for>`).
    pub async fn labelled(&self, label: &str) -> fantoccini::elements::Element {
        let xpath = format!("//*[@id=//label[normalize-space(.)='{label}']/@for]");
        self.client
            .find(Locator::XPath(&xpath))
            .await
            .unwrap_or_else(|e| panic!("no control labelled {label:?}: {e}"))
    }

    pub async fn close(mut self) {
        let client = self.client.clone();
        let _ = client.close().await;
        self.kill();
    }

    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}
