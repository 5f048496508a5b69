//! Histogram samples are folded into their buckets in the background,
//! whether or not anyone scrapes `/metrics`.
//!
//! The exporter keeps every sample a histogram takes until it is folded;
//! when only a scrape folded them, a service that nobody scraped grew by
//! about 17 bytes a request, without bound. The test watches this
//! process's anonymous memory, so it has a binary of its own.

use std::time::Duration;

/// This process's anonymous resident memory, in bytes.
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status");
    kib * 1024
}

fn take_samples(n: u32) {
    for i in 0..n {
        metrics::histogram!("gatehouse_upkeep_test_seconds").record(f64::from(i % 1000) / 1000.0);
    }
}

#[test]
fn histogram_samples_do_not_pile_up_unscraped() {
    gatehouse::telemetry::init_metrics_upkept_every(Duration::from_millis(100));
    // 400,000 samples are about 6.5 MB while they are held.
    let round = 400_000;
    take_samples(round);
    std::thread::sleep(Duration::from_millis(400));
    let settled = rss_anon();
    for _ in 0..3 {
        take_samples(round);
        std::thread::sleep(Duration::from_millis(400));
    }
    let grown = rss_anon().saturating_sub(settled);
    assert!(
        grown < 4 << 20,
        "1.2 million more samples, never scraped, grew the process by {} KiB",
        grown / 1024
    );
}
