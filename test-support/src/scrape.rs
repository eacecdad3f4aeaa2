//! A `GET /metrics` read as Prometheus reads it: over HTTP, without credentials, parsed
//! by a strict OpenMetrics parser.

use std::net::SocketAddr;

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};

pub struct Scrape(MetricsExposition<OpenMetricsType, OpenMetricsValue>);

impl Scrape {
    /// `GET /metrics` at `addr` (the controller's REST address, the agent's
    /// `--metrics-addr`).
    pub async fn fetch(addr: SocketAddr) -> Scrape {
        Scrape::answer(
            reqwest::get(format!("http://{addr}/metrics"))
                .await
                .expect("GET /metrics"),
        )
        .await
    }

    /// Checks that `response` is an exposition, and parses it.
    pub async fn answer(response: reqwest::Response) -> Scrape {
        assert_eq!(response.status(), 200, "GET /metrics");
        let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .expect("content type")
            .to_string();
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let text = response.text().await.expect("body");
        Scrape::parse(&text)
    }

    /// openmetrics-parser 0.5 refuses a UNIT line on a histogram, which OpenMetrics
    /// allows and Prometheus reads: those lines are dropped first; the rest is parsed
    /// as it came.
    pub fn parse(text: &str) -> Scrape {
        let without_units: String = text
            .lines()
            .filter(|l| !l.starts_with("# UNIT "))
            .flat_map(|l| [l, "\n"])
            .collect();
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&without_units)
            .unwrap_or_else(|e| panic!("not OpenMetrics ({e}):\n{text}"));
        Scrape(parsed)
    }

    /// The sum over the family's samples whose labels include `labels` (a histogram
    /// counts its observations); 0 when none does, or the family has no sample yet.
    pub fn value(&self, family: &str, labels: &[(&str, &str)]) -> f64 {
        let Some(family) = self.0.families.get(family) else {
            return 0.0;
        };
        family
            .iter_samples()
            .filter(|s| {
                let set = s.get_labelset().expect("labels");
                labels
                    .iter()
                    .all(|(k, v)| set.get_label_value(k) == Some(*v))
            })
            .map(|s| match &s.value {
                OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                OpenMetricsValue::Counter(c) => c.value.as_f64(),
                OpenMetricsValue::Histogram(h) => h.count.unwrap_or(0) as f64,
                other => panic!("unexpected value {other:?}"),
            })
            .sum()
    }

    /// Every value the family's samples have for `label`.
    pub fn label_values(&self, family: &str, label: &str) -> Vec<String> {
        self.0
            .families
            .get(family)
            .map(|f| {
                f.iter_samples()
                    .filter_map(|s| {
                        let set = s.get_labelset().ok()?;
                        set.get_label_value(label).map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
