//! A real browser for the pages' tests: Debian's Chromium, headless, driven
//! through ChromeDriver (WebDriver) on a loopback port of its own.
//!
//! Each test gets its own ChromeDriver and browser profile, so cookies never
//! leak between tests. Screenshots of the pages a test visits are written
//! to `target/screenshots/` as test artifacts.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::process::{Child, Command};

pub struct Chrome {
    pub client: Client,
    driver: Child,
}

/// Where screenshots go.
pub fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots")
}

impl Chrome {
    /// A browser with a phone-sized window when `phone` (412×915, as a
    /// common Android phone), a laptop-sized one otherwise.
    pub async fn start(phone: bool) -> Self {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver (apt: chromium-driver; scripts/setup installs it)");
        let size = if phone { "--window-size=412,915" } else { "--window-size=1280,1000" };
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/lib/chromium/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--no-first-run", size],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::rustls().expect("TLS roots").capabilities(caps.clone()).connect(&url).await {
                Ok(client) => return Self { client, driver },
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start: {last:?}");
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn find(&self, css: &str) -> Element {
        let found = self.client.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(css)).await;
        match found {
            Ok(element) => element,
            Err(e) => panic!("no {css} on {}: {e}", self.url().await),
        }
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    pub async fn fill(&self, css: &str, value: &str) {
        let field = self.find(css).await;
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks, and waits for the page the click loads.
    pub async fn click(&self, css: &str) {
        let before = self.client.find(Locator::Css("html")).await.unwrap();
        self.find(css).await.click().await.unwrap();
        // The old document goes stale when the new one arrives.
        for _ in 0..100 {
            if before.tag_name().await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    pub async fn body(&self) -> String {
        self.client.source().await.unwrap()
    }

    /// Saves a screenshot of the page as `name`.png.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(screenshots()).unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), png).unwrap();
    }

    /// Whether the page is wider than the window (it must not be, on a
    /// phone).
    pub async fn scrolls_sideways(&self) -> bool {
        let wide = self
            .client
            .execute("return document.documentElement.scrollWidth > window.innerWidth + 1", vec![])
            .await
            .unwrap();
        wide.as_bool().unwrap()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill().await;
    }
}
