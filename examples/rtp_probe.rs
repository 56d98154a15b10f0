//! RTP receiver for load tests: listens on one UDP port, takes every stream
//! sent to it (told apart by SSRC), and reports send jitter as seen at the
//! receiver: |Δarrival − 20 ms| percentiles, loss from sequence gaps, and
//! timestamp drift against the wall clock.
//!
//!     rtp_probe PORT WARMUP_SECS MEASURE_SECS
//!
//! Packets before WARMUP_SECS are ignored (call ramp-up); the report covers
//! the next MEASURE_SECS. Arrival times are the kernel's receive timestamps
//! (SO_TIMESTAMPNS), so the probe's own scheduling delays don't count as
//! jitter; recvmmsg keeps the probe cheap.
//!
//! With `RTP_PROBE_ECHO=1` every packet goes back to where it came from
//! (one `sendmmsg` a batch), so each stream also receives 50 packets a
//! second, as in a call where the caller talks: the gateway's RTP reads
//! are loaded too.

use std::collections::HashMap;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const BATCH: usize = 64;
/// Histogram of |Δ − 20 ms| in 10 µs buckets up to 200 ms.
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 20_000;

struct StreamState {
    last_arrival: Option<u64>,
    last_seq: u16,
    first_ts: u32,
    first_arrival: u64,
    last_ts: u32,
    received: u64,
    expected_extra: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(port), Some(warmup), Some(measure)) = (
        args.get(1).and_then(|a| a.parse::<u16>().ok()),
        args.get(2).and_then(|a| a.parse::<f64>().ok()),
        args.get(3).and_then(|a| a.parse::<f64>().ok()),
    ) else {
        eprintln!("usage: rtp_probe PORT WARMUP_SECS MEASURE_SECS");
        std::process::exit(2);
    };
    let sock = UdpSocket::bind(("127.0.0.1", port)).expect("bind probe port");
    let big: libc::c_int = 64 << 20;
    // SAFETY: setsockopt on our socket with a c_int.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&big as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    sock.set_read_timeout(Some(Duration::from_millis(100))).ok();
    let on: libc::c_int = 1;
    // SAFETY: as above.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs_f64(warmup);
    let end = measure_from + Duration::from_secs_f64(measure);
    let mut hist = vec![0u64; BUCKETS + 1];
    let mut max_dev_us = 0u64;
    // Deviations over 2 ms by the 100 ms window they arrived in: a tail
    // spread thin is the sender's pacing; one packed into a few windows is
    // a stall (a preempted or descheduled sender).
    let mut late_windows: HashMap<u64, u64> = HashMap::new();
    let mut streams: HashMap<u32, StreamState> = HashMap::new();
    let mut bufs = vec![[0u8; 256]; BATCH];
    let mut iovecs: Vec<libc::iovec> = Vec::with_capacity(BATCH);
    let mut msgs: Vec<libc::mmsghdr> = Vec::with_capacity(BATCH);
    let mut controls = vec![[0u64; 8]; BATCH];
    let echo = std::env::var("RTP_PROBE_ECHO").is_ok_and(|v| v == "1");
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sources: Vec<libc::sockaddr_storage> = vec![unsafe { std::mem::zeroed() }; BATCH];
    // SAFETY: all-zero is a valid mmsghdr; each is filled before use.
    let mut replies: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for b in bufs.iter_mut() {
        iovecs.push(libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        });
    }
    for ((iov, ctl), src) in iovecs
        .iter_mut()
        .zip(controls.iter_mut())
        .zip(sources.iter_mut())
    {
        // SAFETY: zeroed msghdr is valid; we point it at our iovec.
        let mut hdr: libc::mmsghdr = unsafe { std::mem::zeroed() };
        hdr.msg_hdr.msg_iov = iov;
        hdr.msg_hdr.msg_iovlen = 1;
        hdr.msg_hdr.msg_control = ctl.as_mut_ptr().cast();
        hdr.msg_hdr.msg_controllen = std::mem::size_of_val(ctl);
        if echo {
            hdr.msg_hdr.msg_name = (src as *mut libc::sockaddr_storage).cast();
        }
        msgs.push(hdr);
    }
    let mut timeout = libc::timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    let mut total = 0u64;
    while Instant::now() < end {
        for (m, ctl) in msgs.iter_mut().zip(controls.iter()) {
            m.msg_hdr.msg_controllen = std::mem::size_of_val(ctl);
            if echo {
                m.msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            }
        }
        // SAFETY: msgs/iovecs/bufs outlive the call; BATCH entries.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                &mut timeout,
            )
        };
        if n <= 0 {
            continue;
        }
        if echo {
            // Each packet back to its source: the same buffer, the
            // received length.
            let mut sent_iovecs: [libc::iovec; BATCH] = std::array::from_fn(|i| libc::iovec {
                iov_base: iovecs[i].iov_base,
                iov_len: msgs[i].msg_len as usize,
            });
            for ((reply, m), iov) in replies
                .iter_mut()
                .zip(msgs.iter())
                .zip(sent_iovecs.iter_mut())
            {
                reply.msg_hdr.msg_name = m.msg_hdr.msg_name;
                reply.msg_hdr.msg_namelen = m.msg_hdr.msg_namelen;
                reply.msg_hdr.msg_iov = iov;
                reply.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: every reply points at a live buffer of its length and
            // at the source address recvmmsg wrote; n entries.
            unsafe {
                libc::sendmmsg(sock.as_raw_fd(), replies.as_mut_ptr(), n as libc::c_uint, 0);
            }
        }
        let now = Instant::now();
        if now < measure_from {
            continue;
        }
        let fallback = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        for i in 0..n as usize {
            let now = kernel_timestamp(&msgs[i].msg_hdr).unwrap_or(fallback);
            let len = msgs[i].msg_len as usize;
            let p = &bufs[i][..len.min(256)];
            if p.len() < 12 {
                continue;
            }
            let seq = u16::from_be_bytes([p[2], p[3]]);
            let ts = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            let ssrc = u32::from_be_bytes([p[8], p[9], p[10], p[11]]);
            total += 1;
            let st = streams.entry(ssrc).or_insert(StreamState {
                last_arrival: None,
                last_seq: seq.wrapping_sub(1),
                first_ts: ts,
                first_arrival: now,
                last_ts: ts,
                received: 0,
                expected_extra: 0,
            });
            // Packets within one recvmmsg batch share an arrival time only
            // if they were already queued; Δ is measured per stream.
            if let Some(last) = st.last_arrival {
                let delta = (now.saturating_sub(last) / 1000) as i64;
                let dev = (delta - 20_000).unsigned_abs();
                max_dev_us = max_dev_us.max(dev);
                if dev > 2_000 {
                    *late_windows.entry(now / 100_000_000).or_default() += 1;
                }
                let b = ((dev / BUCKET_US) as usize).min(BUCKETS);
                hist[b] += 1;
            }
            let gap = seq.wrapping_sub(st.last_seq);
            if gap > 1 && gap < 1000 {
                st.expected_extra += u64::from(gap - 1);
            }
            st.last_seq = seq;
            st.last_arrival = Some(now);
            st.last_ts = ts;
            st.received += 1;
        }
    }
    let samples: u64 = hist.iter().sum();
    let pct = |q: f64| -> f64 {
        let target = (samples as f64 * q).ceil() as u64;
        let mut acc = 0;
        for (i, c) in hist.iter().enumerate() {
            acc += c;
            if acc >= target {
                return (i as u64 * BUCKET_US) as f64 / 1000.0;
            }
        }
        f64::NAN
    };
    let lost: u64 = streams.values().map(|s| s.expected_extra).sum();
    let received: u64 = streams.values().map(|s| s.received).sum();
    // Drift: media time vs wall time over each stream's measured span.
    let mut drifts: Vec<f64> = streams
        .values()
        .filter(|s| s.received > 50)
        .filter_map(|s| {
            let wall = s.last_arrival?.saturating_sub(s.first_arrival) as f64 / 1e9;
            let media = f64::from(s.last_ts.wrapping_sub(s.first_ts)) / 8000.0;
            Some((media - wall) * 1000.0)
        })
        .collect();
    drifts.sort_by(|a, b| a.total_cmp(b));
    let drift_max = drifts.iter().map(|d| d.abs()).fold(0.0f64, f64::max);
    println!("streams={}", streams.len());
    println!("packets={received} total_seen={total}");
    println!(
        "loss={lost} loss_pct={:.4}",
        if received + lost > 0 {
            lost as f64 * 100.0 / (received + lost) as f64
        } else {
            0.0
        }
    );
    println!(
        "jitter_ms p50={:.3} p99={:.3} p99.9={:.3} max={:.3}",
        pct(0.50),
        pct(0.99),
        pct(0.999),
        max_dev_us as f64 / 1000.0
    );
    println!("drift_ms max_abs={drift_max:.2}");
    let late: u64 = late_windows.values().sum();
    let mut worst: Vec<(u64, u64)> = late_windows.iter().map(|(w, n)| (*n, *w)).collect();
    worst.sort_unstable_by(|a, b| b.cmp(a));
    worst.truncate(8);
    let first = worst.iter().map(|(_, w)| *w).min().unwrap_or(0);
    let shown: Vec<String> = worst
        .iter()
        .map(|(n, w)| format!("{n}@+{:.1}s", (w - first) as f64 / 10.0))
        .collect();
    println!(
        "over_2ms={late} windows_100ms={} worst_windows={}",
        late_windows.len(),
        shown.join(",")
    );
}

/// The SO_TIMESTAMPNS control message, in nanoseconds since the epoch.
fn kernel_timestamp(hdr: &libc::msghdr) -> Option<u64> {
    // SAFETY: walking control messages the kernel filled in for this msghdr.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(hdr);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS
            {
                let ts = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg) as *const libc::timespec);
                return Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(hdr, cmsg);
        }
    }
    None
}
