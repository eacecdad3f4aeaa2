//! A headless Chromium driven through ChromeDriver (WebDriver, with fantoccini): what the
//! console's browser tests and its first-paint benchmark look through.
//!
//! Debian's `chromium` and `chromium-driver` are used where they are (`.ci/run` installs
//! them); `OCP_CHROMIUM` and `OCP_CHROMEDRIVER` name others.

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};

use crate::fleet::{FleetError, spawn_logged, tail};

#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "{what} is not installed at {path}: install Debian's chromium and chromium-driver \
         (apt-get install chromium chromium-driver), or name it with {env}"
    )]
    Missing {
        what: &'static str,
        path: String,
        env: &'static str,
    },
    #[error("starting chromedriver: {0}")]
    Start(#[from] FleetError),
    #[error("chromedriver did not listen on {addr} within 20 s; its log ends:\n{tail}")]
    NotReady { addr: SocketAddr, tail: String },
    #[error("opening a Chromium session: {0}")]
    Session(#[from] fantoccini::error::NewSessionError),
    #[error("the browser: {0}")]
    Command(#[from] fantoccini::error::CmdError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A Chromium session; dropping it ends ChromeDriver and the browser with it.
pub struct Browser {
    pub client: Client,
    driver: Child,
}

fn binary(env: &'static str, default: &str, what: &'static str) -> Result<PathBuf, BrowserError> {
    let path = std::env::var(env).unwrap_or_else(|_| default.to_string());
    let path = PathBuf::from(path);
    if path.exists() {
        Ok(path)
    } else {
        Err(BrowserError::Missing {
            what,
            path: path.display().to_string(),
            env,
        })
    }
}

/// Whether a browser is there to test with: the tests skip without one, unless
/// `OCP_REQUIRE_BROWSER=1` (CI) makes that a failure.
pub fn available() -> Result<(), BrowserError> {
    binary("OCP_CHROMIUM", "/usr/bin/chromium", "Chromium")?;
    binary("OCP_CHROMEDRIVER", "/usr/bin/chromedriver", "ChromeDriver")?;
    Ok(())
}

impl Browser {
    /// Starts ChromeDriver and a headless Chromium with a fresh profile under `dir`.
    /// The flags keep Chromium off the network (this machine's is closed, and a test
    /// must not depend on Google's hosts) and let it run as root.
    pub async fn start(dir: &Path, width: u32, height: u32) -> Result<Browser, BrowserError> {
        let chromium = binary("OCP_CHROMIUM", "/usr/bin/chromium", "Chromium")?;
        let chromedriver = binary("OCP_CHROMEDRIVER", "/usr/bin/chromedriver", "ChromeDriver")?;
        std::fs::create_dir_all(dir)?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log = dir.join("chromedriver.log");
        // Its own process group, so that Chromium goes with it when a failed test
        // never ends the session.
        let mut driver = spawn_logged(
            Command::new(&chromedriver)
                .arg(format!("--port={port}"))
                // Chromium's scratch folders go with the run's, not into /tmp.
                .env("TMPDIR", dir)
                .process_group(0),
            &log,
        )?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || driver.try_wait().ok().flatten().is_some() {
                end(&mut driver);
                return Err(BrowserError::NotReady {
                    addr,
                    tail: tail(&log),
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = dir.join("profile");
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".to_string(),
            "--disable-gpu".to_string(),
            "--disable-dev-shm-usage".to_string(),
            "--disable-quic".to_string(),
            "--no-first-run".to_string(),
            "--disable-background-networking".to_string(),
            "--disable-component-update".to_string(),
            "--disable-sync".to_string(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        // The fleet's HTTPS certificate comes from its own CA.
        capabilities.insert("acceptInsecureCerts".into(), json!(true));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": chromium, "args": args }),
        );
        let connected =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(capabilities)
                .connect(&format!("http://{addr}"))
                .await;
        match connected {
            Ok(client) => Ok(Browser { client, driver }),
            Err(e) => {
                end(&mut driver);
                Err(e.into())
            }
        }
    }

    /// Waits until `css` matches an element for which `check` holds, up to `limit`.
    pub async fn wait_until(
        &self,
        limit: Duration,
        what: &str,
        check: &str,
    ) -> Result<Value, String> {
        let deadline = Instant::now() + limit;
        loop {
            let last = match self.client.execute(check, vec![]).await {
                Ok(v) if v.as_bool() != Some(false) && !v.is_null() => return Ok(v),
                Ok(v) => v,
                Err(e) => Value::String(e.to_string()),
            };
            if Instant::now() > deadline {
                return Err(format!(
                    "waited {} s for {what}; the check last gave {last}",
                    limit.as_secs()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn click(&self, css: &str) -> Result<(), BrowserError> {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await?
            .click()
            .await?;
        Ok(())
    }

    pub async fn screenshot(&self, path: &Path) -> Result<(), BrowserError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, self.client.screenshot().await?)?;
        Ok(())
    }

    /// Ends the session (Chromium exits), then ChromeDriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// SIGKILL to ChromeDriver's process group (Chromium included), then the reap.
fn end(driver: &mut Child) {
    if let Ok(pid) = i32::try_from(driver.id()) {
        // The group our child leads; it is not reaped yet, so the group id is still ours.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = driver.kill();
    let _ = driver.wait();
}

impl Drop for Browser {
    fn drop(&mut self) {
        end(&mut self.driver);
    }
}
