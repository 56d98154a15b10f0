//! SQLite write throughput for call detail records.
//!
//! A producer thread (standing in for the signalling loop) queues call
//! records with `Store::record_call` at a fixed rate, on an absolute
//! schedule, for a fixed time. Meanwhile the bench samples:
//! - the writer's queue depth (every 10 ms);
//! - the writer's latency: every 20 ms it queues a probe record of its own
//!   and times `flush()` after it, which resolves once every write queued
//!   before it is committed: that record's enqueue-to-commit time (the
//!   probes add 50 records/s to the load);
//! - what `record_call` itself costs the producer.
//!
//! Then a second phase queues records as fast as one thread can and times
//! how long the writer takes to commit them all: the ceiling.
//!
//! `cargo bench --bench store_cdr` (2,000/s for 30 s; `CDR_RATE` and
//! `CDR_SECS` change them). Under `cargo test` it runs for half a second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crossline::store::{CallRecord, SqliteStore, Store};

fn record(i: u64) -> CallRecord {
    let mut r = CallRecord::starting(
        format!("{i:016x}-4f1c-9b2e@10.0.0.1"),
        "inbound",
        "+34910000000".into(),
        format!("+346{:08}", i % 100_000_000),
        Some("carrier".into()),
        Some("support".into()),
    );
    r.answered_at = Some(SystemTime::now());
    r.outcome = "remote_bye".into();
    r.vars.insert("email".into(), "someone@example.com".into());
    r
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let rate = env_or("CDR_RATE", 2_000);
    let run_for = if bench {
        Duration::from_secs(env_or("CDR_SECS", 30))
    } else {
        Duration::from_millis(500)
    };
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("cdr.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Phase 1: a steady rate.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (store, done) = (store.clone(), done.clone());
        runtime.spawn(async move {
            let mut depth = Vec::new();
            let mut latency = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                tick.tick().await;
                depth.push(store.write_stats().depth() as f64);
                n += 1;
                if n % 2 == 0 {
                    // A probe record of our own, timed from queued to
                    // committed (the wake-up of this task included).
                    let t = Instant::now();
                    store.record_call(record(u64::MAX - n)).unwrap();
                    store.flush().await.unwrap();
                    latency.push(t.elapsed().as_secs_f64() * 1e3);
                }
            }
            (depth, latency)
        })
    };
    let producer = {
        let store = store.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut pushed = 0u64;
            let mut enqueue = Vec::with_capacity((rate * run_for.as_secs().max(1)) as usize);
            while start.elapsed() < run_for {
                let due = (start.elapsed().as_nanos() * u128::from(rate) / 1_000_000_000) as u64;
                while pushed < due {
                    let r = record(pushed);
                    let t = Instant::now();
                    store.record_call(r).unwrap();
                    enqueue.push(t.elapsed().as_secs_f64() * 1e6);
                    pushed += 1;
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            (pushed, start.elapsed(), enqueue)
        })
    };
    let (pushed, took, enqueue) = producer.join().unwrap();
    let applied_in_time = store.write_stats().applied;
    done.store(true, Ordering::Relaxed);
    let (depth, latency) = runtime.block_on(sampler).unwrap();
    let drain = Instant::now();
    runtime.block_on(store.flush()).unwrap();
    let drain = drain.elapsed();
    let stats = store.write_stats();
    let (depth, latency, enqueue) = (sorted(depth), sorted(latency), sorted(enqueue));
    println!("store_cdr: SQLite {}", path.display());
    println!(
        "steady: offered {rate}/s for {:.1} s: queued {pushed} ({:.0}/s), committed {applied_in_time} in that time, probes included ({:.0}/s), rest drained in {:.1} ms",
        took.as_secs_f64(),
        pushed as f64 / took.as_secs_f64(),
        applied_in_time as f64 / took.as_secs_f64(),
        drain.as_secs_f64() * 1e3,
    );
    println!(
        "  queue depth: median {:.0}, p99 {:.0}, max {:.0} ({} samples)",
        pct(&depth, 0.5),
        pct(&depth, 0.99),
        pct(&depth, 1.0),
        depth.len()
    );
    println!(
        "  writer latency (enqueue to commit): median {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} samples)",
        pct(&latency, 0.5),
        pct(&latency, 0.99),
        pct(&latency, 1.0),
        latency.len()
    );
    println!(
        "  record_call (enqueue) cost: median {:.2} µs, p99 {:.2} µs, max {:.1} µs",
        pct(&enqueue, 0.5),
        pct(&enqueue, 0.99),
        pct(&enqueue, 1.0)
    );
    println!(
        "  transactions: {} for {} records ({:.1} per transaction)",
        stats.batches,
        stats.applied,
        stats.applied as f64 / stats.batches.max(1) as f64
    );

    // Phase 2: as fast as one thread can queue.
    let n = if bench { 200_000 } else { 2_000 };
    let before = store.write_stats();
    let start = Instant::now();
    for i in 0..n {
        store.record_call(record(pushed + i)).unwrap();
    }
    let queued_in = start.elapsed();
    runtime.block_on(store.flush()).unwrap();
    let took = start.elapsed();
    let after = store.write_stats();
    println!(
        "ceiling: {n} records queued in {:.0} ms, all committed after {:.0} ms: {:.0}/s ({} transactions, {:.0} records each)",
        queued_in.as_secs_f64() * 1e3,
        took.as_secs_f64() * 1e3,
        n as f64 / took.as_secs_f64(),
        after.batches - before.batches,
        n as f64 / (after.batches - before.batches).max(1) as f64
    );
    let stored = runtime
        .block_on(store.recent_calls(1))
        .unwrap()
        .pop()
        .map(|r| r.call_id);
    assert_eq!(stored, Some(record(pushed + n - 1).call_id));
    assert_eq!(after.depth(), 0);
}
