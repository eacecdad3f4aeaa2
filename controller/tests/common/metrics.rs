//! Waiting for a controller's metrics to move.

use std::net::SocketAddr;
use std::time::Duration;

use super::fleet::WAIT;
pub use test_support::scrape::Scrape;

/// Scrapes until `cond` holds for the value; panics with the last one after [`WAIT`].
pub async fn wait_metric(
    http: SocketAddr,
    family: &str,
    labels: &[(&str, &str)],
    cond: impl Fn(f64) -> bool,
) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let scrape = Scrape::fetch(http).await;
        let value = scrape.value(family, labels);
        if cond(value) {
            return scrape;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{family}{labels:?} is still {value}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
