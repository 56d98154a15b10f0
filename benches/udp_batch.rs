//! The loopback floor for RTP sends and reads: what the kernel charges per
//! datagram with one `send_to` per stream socket (the audio loop's way:
//! each stream owns its port) against `sendmmsg` through one socket (the
//! floor: one system call for many datagrams), and draining a socket with
//! `recv_from` until it is empty against one `recvmmsg`.

use std::hint::black_box;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossline::media::batch_io::{send_batch, RecvBatch};
use crossline::media::raw_send::RawSender;

/// Datagrams per iteration of the send benches: 1,000 streams' packets.
const STREAMS: usize = 1000;
/// An RTP packet of 20 ms G.711: 12 bytes of header, 160 of payload.
const PACKET: [u8; 172] = [0x55; 172];

fn bound() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").unwrap()
}

/// A socket that a thread keeps empty, so sends never meet a full buffer.
fn drained_sink() -> SocketAddr {
    let sink = bound();
    let addr = sink.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut batch = RecvBatch::new();
        sink.set_nonblocking(false).unwrap();
        let mut buf = [0u8; 256];
        // Block for the first, then take the rest in batches.
        while sink.recv_from(&mut buf).is_ok() {
            while batch.recv(&sink).unwrap_or(0) > 0 {}
        }
    });
    addr
}

fn sends(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_send");
    g.throughput(Throughput::Elements(STREAMS as u64));
    g.sample_size(30);
    let sink = drained_sink();
    let sockets: Vec<UdpSocket> = (0..STREAMS).map(|_| bound()).collect();
    g.bench_function("send_to_per_stream_socket_1000", |b| {
        b.iter(|| {
            for s in &sockets {
                let _ = black_box(s.send_to(&PACKET, sink));
            }
        })
    });
    let one = bound();
    let messages: Vec<(&[u8], SocketAddr)> = (0..STREAMS).map(|_| (&PACKET[..], sink)).collect();
    g.bench_function("sendmmsg_one_socket_1000", |b| {
        b.iter(|| black_box(send_batch(&one, &messages)))
    });
    // The audio loop's way when it may open a raw socket: each stream's
    // datagram from its own port, 64 to a sendmmsg through one raw UDP
    // socket (the kernel writes the IPv4 header).
    match RawSender::open(std::net::Ipv4Addr::LOCALHOST) {
        Ok(mut raw) => {
            let SocketAddr::V4(to) = sink else {
                unreachable!("the sink is on 127.0.0.1")
            };
            let from: Vec<SocketAddrV4> = sockets
                .iter()
                .map(|s| match s.local_addr().unwrap() {
                    SocketAddr::V4(a) => a,
                    SocketAddr::V6(_) => unreachable!("bound on 127.0.0.1"),
                })
                .collect();
            g.bench_function("raw_sendmmsg_per_stream_port_1000", |b| {
                b.iter(|| {
                    for f in &from {
                        raw.push(*f, to, &PACKET);
                    }
                    raw.flush();
                    black_box(raw.take_counts())
                })
            });
        }
        Err(e) => eprintln!(
            "udp_send/raw_sendmmsg_per_stream_port_1000 not run: no raw socket ({e}); run as root"
        ),
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("udp_recv");
    // A stream polled every 5th tick finds 5 packets queued (100 ms).
    g.throughput(Throughput::Elements(5));
    let ours = bound();
    ours.set_nonblocking(true).unwrap();
    let peer = bound();
    let to = ours.local_addr().unwrap();
    let queue_five = || {
        for _ in 0..5 {
            peer.send_to(&PACKET, to).unwrap();
        }
    };
    let mut buf = [0u8; 2048];
    g.bench_function("recv_from_until_empty_5_queued", |b| {
        b.iter_batched(
            queue_five,
            |()| {
                let mut n = 0;
                while ours.recv_from(&mut buf).is_ok() {
                    n += 1;
                }
                black_box(n)
            },
            BatchSize::PerIteration,
        )
    });
    let mut batch = RecvBatch::new();
    g.bench_function("recvmmsg_5_queued", |b| {
        b.iter_batched(
            queue_five,
            |()| black_box(batch.recv(&ours).unwrap_or(0)),
            BatchSize::PerIteration,
        )
    });
    // Most polls of a stream on hold find nothing.
    g.throughput(Throughput::Elements(1));
    g.bench_function("recv_from_empty", |b| {
        b.iter(|| black_box(ours.recv_from(&mut buf).is_ok()))
    });
    g.bench_function("recvmmsg_empty", |b| {
        b.iter(|| black_box(batch.recv(&ours).unwrap_or(0)))
    });
    g.finish();
}

criterion_group!(benches, sends, reads);
criterion_main!(benches);
