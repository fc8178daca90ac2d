//! Open-loop load: sends GET requests at a fixed rate for a fixed time and
//! prints latency percentiles. Requests are started on schedule whether or
//! not earlier ones have finished, so slow answers cannot hide behind a lower
//! rate. Used by `scripts/bench-e2e`.
//!
//! Usage: ratebench URL API_KEY [rate per second] [seconds]

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(url), Some(key)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: ratebench URL API_KEY [rate] [seconds]");
        std::process::exit(2);
    };
    let rate: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let seconds: u64 = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let client = pipeline_cli::http::builder().pool_max_idle_per_host(256).build().expect("client");
        // Warm the connection pool and the server.
        for _ in 0..200 {
            let _ = client.get(url).header("x-api-key", key).send().await;
        }
        let total = rate * seconds;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let start = Instant::now();
        let mut tasks = Vec::with_capacity(total as usize);
        for i in 0..total {
            let due = start + interval * i as u32;
            tokio::time::sleep_until(due.into()).await;
            let request = client.get(url).header("x-api-key", key);
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let ok = match request.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                // Latency counted from when the request was due, not sent.
                (ok, sent.max(due).duration_since(due) + sent.elapsed())
            }));
        }
        let mut latencies = Vec::with_capacity(tasks.len());
        let mut errors = 0;
        for t in tasks {
            match t.await {
                Ok((true, latency)) => latencies.push(latency),
                _ => errors += 1,
            }
        }
        let elapsed = start.elapsed().as_secs_f64();
        latencies.sort();
        let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or_default();
        println!(
            "GET {url}: {total} requests at {rate}/s over {elapsed:.1} s; errors {errors}; latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(0.50).as_secs_f64() * 1000.0,
            pct(0.99).as_secs_f64() * 1000.0,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
        );
    });
}
