//! The chart fetcher's metrics: fetches by kind of source and result, the time of each
//! fetch that went to the network, and the cache's size and cleanups. Labels are the
//! kind of source (`repository`, `oci`) and the result only: never a URL, chart or
//! version. Made with the fetcher, registered where the daemon serves its metrics.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub(super) const SOURCES: [&str; 2] = ["repository", "oci"];
/// `fetched`: downloaded and verified; `cached`: served from the cache with no request;
/// `failed`: could not be fetched.
pub(super) const RESULTS: [&str; 3] = ["fetched", "cached", "failed"];

/// The fetcher's collectors.
#[derive(Clone)]
pub struct FetchMetrics {
    pub fetches: IntCounterVec,
    pub duration: HistogramVec,
    pub cache_bytes: IntGauge,
    pub removed: IntCounter,
}

impl FetchMetrics {
    pub(super) fn new() -> prometheus::Result<FetchMetrics> {
        let m = FetchMetrics {
            fetches: IntCounterVec::new(
                Opts::new(
                    "pontoon_chart_fetches_total",
                    "Remote charts asked for, by kind of source and result (fetched, cached, failed)",
                ),
                &["source", "result"],
            )?,
            duration: HistogramVec::new(
                HistogramOpts::new(
                    "pontoon_chart_fetch_duration_seconds",
                    "Duration of one chart fetch that went to the network (fetched or failed)",
                )
                .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["source"],
            )?,
            cache_bytes: IntGauge::new(
                "pontoon_chart_cache_bytes",
                "Bytes of the chart archives in the cache, as the last cleanup left them plus what was fetched since",
            )?,
            removed: IntCounter::new(
                "pontoon_chart_cache_removed_total",
                "Chart archives removed from the cache, unused for longer than charts.keepUnused",
            )?,
        };
        for source in SOURCES {
            for result in RESULTS {
                m.fetches.with_label_values(&[source, result]);
            }
            m.duration.with_label_values(&[source]);
        }
        Ok(m)
    }

    /// Registers every collector with `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.fetches.clone()))?;
        registry.register(Box::new(self.duration.clone()))?;
        registry.register(Box::new(self.cache_bytes.clone()))?;
        registry.register(Box::new(self.removed.clone()))?;
        Ok(())
    }
}
