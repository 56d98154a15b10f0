//! A web call's transcoding per 20 ms frame, both ways: the browser's
//! fullband Opus to G.711 8 kHz for the gateway (decoded straight to 8 kHz,
//! µ-law), and back (µ-law, Opus encode from 8 kHz at the configured
//! complexity).
//! Legs per core = 20 ms / (uplink + downlink).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;
use std::time::Duration;

use crossline::media::g711::{encode_ulaw, linear_to_ulaw};
use crossline::media::player::{HoldProgram, Player, Source, FRAME_SAMPLES};
use crossline::webrtc::transcode::{browser_like_opus, Downlink, Uplink, FRAME_8K};

/// Speech-like 8 kHz µ-law: two tones with a slow wobble, 1 s.
fn ulaw_second() -> Vec<u8> {
    (0..8000)
        .map(|i| {
            let t = f64::from(i) / 8000.0;
            let s = (t * 2.0 * std::f64::consts::PI * 310.0).sin() * 6000.0
                + (t * 2.0 * std::f64::consts::PI * 1270.0).sin() * 3000.0 * (t * 3.0).sin();
            linear_to_ulaw(s as i16)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("webrtc");
    g.throughput(Throughput::Elements(1));
    let audio = ulaw_second();
    for complexity in [1u8, 5, 10] {
        let mut down = Downlink::new(complexity).unwrap();
        let mut packet = [0u8; 1500];
        let mut i = 0;
        g.bench_function(format!("downlink_frame_c{complexity}"), |b| {
            b.iter(|| {
                let frame = &audio[(i % 50) * FRAME_8K..(i % 50 + 1) * FRAME_8K];
                i += 1;
                black_box(down.push(frame, &mut packet).unwrap())
            })
        });
    }
    // Opus packets as the browser would send them: fullband, 48 kHz.
    let packets = browser_like_opus(50).unwrap();
    let mut up = Uplink::new().unwrap();
    let mut i = 0;
    g.bench_function("uplink_frame", |b| {
        b.iter(|| {
            let p = &packets[i % packets.len()];
            i += 1;
            let mut frames = 0;
            up.push(Some(p), |f| {
                black_box(f);
                frames += 1;
            })
            .unwrap();
            black_box(frames)
        })
    });
    // The shared wait music: one tick of the broadcaster (mix, µ-law,
    // resample, Opus) serves every leg on hold, however many.
    let music: Arc<[i16]> = (0..80_000)
        .map(|i| ((f64::from(i) * 0.05).sin() * 6000.0) as i16)
        .collect();
    let program = Arc::new(HoldProgram::new(
        vec![music],
        None,
        Duration::from_secs(30),
        -12.0,
    ));
    let mut player = Player::new(Source::Hold(program));
    let mut shared = Downlink::new(1).unwrap();
    let mut pcm = [0i16; FRAME_SAMPLES];
    let mut ulaw = [0u8; FRAME_SAMPLES];
    g.bench_function("shared_hold_tick", |b| {
        b.iter(|| {
            player.fill(&mut pcm);
            encode_ulaw(&pcm, &mut ulaw);
            black_box(shared.push(&ulaw, &mut packet_buf()).unwrap())
        })
    });
    g.finish();
}

fn packet_buf() -> [u8; 1500] {
    [0u8; 1500]
}

criterion_group!(benches, bench);
criterion_main!(benches);
