//! Audio hot path: mixer, G.711, resampling, DTMF decode, and one tick of
//! the audio loop's work for 1,000 streams.

use std::hint::black_box;
use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use crossline::media::audio_file::resample_to_8k;
use crossline::media::dtmf::{DtmfReceiver, DtmfSender};
use crossline::media::g711::{decode_ulaw, encode_ulaw};
use crossline::media::player::{HoldProgram, Player, Source, FRAME_SAMPLES};
use crossline::media::record_tap::Tap;
use crossline::media::rtp_packet::write_rtp;

fn hold_player() -> Player {
    let music: Arc<[i16]> = (0..160_000)
        .map(|i| ((i * 37) % 20_000 - 10_000) as i16)
        .collect();
    let message: Arc<[i16]> = (0..32_000)
        .map(|i| ((i * 11) % 16_000 - 8_000) as i16)
        .collect();
    let program = HoldProgram::new(vec![music], Some(message), Duration::from_secs(5), -12.0);
    Player::new(Source::Hold(Arc::new(program)))
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("media");
    g.throughput(Throughput::Elements(1));

    // Mixer: music ducked under a message, one 20 ms frame.
    let mut player = hold_player();
    let mut frame = [0i16; FRAME_SAMPLES];
    g.bench_function("hold_mix_frame", |b| {
        b.iter(|| black_box(player.fill(&mut frame)))
    });

    let pcm: [i16; FRAME_SAMPLES] = std::array::from_fn(|i| (i as i16).wrapping_mul(397));
    let mut out = [0u8; FRAME_SAMPLES];
    g.bench_function("g711_ulaw_encode_frame", |b| {
        b.iter(|| black_box(encode_ulaw(black_box(&pcm), &mut out)))
    });

    // One second of 48 kHz audio to 8 kHz (done once per file, at load).
    let one_sec: Vec<f32> = (0..48_000)
        .map(|i| ((i as f32) * 0.05).sin() * 0.5)
        .collect();
    g.bench_function("resample_1s_48k_to_8k", |b| {
        b.iter(|| black_box(resample_to_8k(black_box(&one_sec), 48_000).map(|v| v.len())))
    });

    // A whole key press (marker, continuations, 3 end packets).
    let mut packets = Vec::new();
    let mut sender = DtmfSender::new('5', 100, 10).unwrap();
    let mut p = [0u8; 4];
    while let Some((marker, _)) = sender.next_payload(&mut p) {
        packets.push((marker, p));
    }
    g.bench_function("dtmf_decode_key_press", |b| {
        b.iter_batched(
            DtmfReceiver::new,
            |mut rx| {
                let mut digits = 0;
                for (marker, payload) in &packets {
                    if rx.on_packet(1234, *marker, payload).is_some() {
                        digits += 1;
                    }
                }
                black_box(digits)
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();

    // One audio-loop tick for 1,000 streams: mix, encode, packetise, and
    // (second bench) send each packet over loopback UDP.
    let mut g = c.benchmark_group("loop_tick");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(30);
    let mut players: Vec<Player> = (0..1000).map(|_| hold_player()).collect();
    let mut packet = [0u8; 256];
    g.bench_function("compute_1000_streams", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (i, p) in players.iter_mut().enumerate() {
                p.fill(&mut frame);
                encode_ulaw(&frame, &mut out);
                if let Ok(n) = write_rtp(&mut packet, 0, false, i as u16, 0, i as u32, &out) {
                    bytes += n;
                }
            }
            black_box(bytes)
        })
    });
    // The same with every stream recorded: its received packet (here, the
    // last one sent) decoded into the tap, and one frame of both directions
    // pushed into the writer's ring. The rings are emptied without copying
    // (the writer thread's work, not the loop's).
    let mut taps: Vec<_> = (0..1000).map(|_| Tap::new(100)).collect();
    let mut received = [0i16; FRAME_SAMPLES];
    g.bench_function("compute_1000_streams_recorded", |b| {
        b.iter(|| {
            let mut bytes = 0;
            for (i, (p, (tap, ring, _))) in players.iter_mut().zip(taps.iter_mut()).enumerate() {
                p.fill(&mut frame);
                decode_ulaw(&out, &mut received);
                tap.received(&received);
                tap.frame(&frame);
                encode_ulaw(&frame, &mut out);
                if let Ok(n) = write_rtp(&mut packet, 0, false, i as u16, 0, i as u32, &out) {
                    bytes += n;
                }
                if let Ok(read) = ring.read_chunk(ring.slots()) {
                    read.commit_all();
                }
            }
            black_box(bytes)
        })
    });
    let sink = UdpSocket::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let sockets: Vec<UdpSocket> = (0..1000)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    // Drain the sink in the background so its buffer never fills.
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while sink.recv_from(&mut buf).is_ok() {}
    });
    g.bench_function("compute_and_send_1000_streams", |b| {
        b.iter(|| {
            for (i, (p, s)) in players.iter_mut().zip(&sockets).enumerate() {
                p.fill(&mut frame);
                encode_ulaw(&frame, &mut out);
                if let Ok(n) = write_rtp(&mut packet, 0, false, i as u16, 0, i as u32, &out) {
                    let _ = s.send_to(&packet[..n], sink_addr);
                }
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
