//! Call-progress tones, synthesised once into shared 8 kHz clips that loop.

use std::f64::consts::PI;
use std::sync::Arc;

/// Ringback cadences by region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ringback {
    /// North America: 440 + 480 Hz, 2 s on, 4 s off.
    Us,
    /// ITU/Europe: 425 Hz, 1 s on, 4 s off.
    Eu,
    /// UK: 400 + 450 Hz, 0.4 on, 0.2 off, 0.4 on, 2 s off.
    Uk,
}

impl Ringback {
    /// The region for a config name: `us`, `eu` or `uk`, any case.
    pub fn from_name(name: &str) -> Option<Ringback> {
        match name.to_ascii_lowercase().as_str() {
            "us" => Some(Ringback::Us),
            "eu" => Some(Ringback::Eu),
            "uk" => Some(Ringback::Uk),
            _ => None,
        }
    }
}

/// One full cadence cycle of ringback; play it looped.
pub fn ringback(kind: Ringback) -> Arc<[i16]> {
    // (frequencies, on/off segments in ms)
    let (freqs, segments): (&[f64], &[(bool, u32)]) = match kind {
        Ringback::Us => (&[440.0, 480.0], &[(true, 2000), (false, 4000)]),
        Ringback::Eu => (&[425.0], &[(true, 1000), (false, 4000)]),
        Ringback::Uk => (
            &[400.0, 450.0],
            &[(true, 400), (false, 200), (true, 400), (false, 2000)],
        ),
    };
    cadence(freqs, segments)
}

/// One cycle of busy tone (480 + 620 Hz, 0.5 s on, 0.5 s off); play it
/// looped.
pub fn busy() -> Arc<[i16]> {
    cadence(&[480.0, 620.0], &[(true, 500), (false, 500)])
}

/// `freqs` summed during the on segments, silence in the off ones.
fn cadence(freqs: &[f64], segments: &[(bool, u32)]) -> Arc<[i16]> {
    // -16 dBFS overall, split between the components.
    let amp = 32767.0 * 10f64.powf(-16.0 / 20.0) / freqs.len() as f64;
    let mut out = Vec::new();
    let mut n: u64 = 0;
    for &(on, ms) in segments {
        let len = ms as usize * 8;
        let ramp = 40; // 5 ms fade: no click at each burst's edges
        for i in 0..len {
            let t = n as f64 / 8000.0;
            n += 1;
            let v = if on {
                let edge = (i.min(len - 1 - i) as f64 / ramp as f64).min(1.0);
                freqs.iter().map(|f| (2.0 * PI * f * t).sin()).sum::<f64>() * amp * edge
            } else {
                0.0
            };
            out.push(v.round() as i16);
        }
    }
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn level(samples: &[i16], freq: f64) -> f64 {
        let k = 2.0 * (2.0 * PI * freq / 8000.0).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for &x in samples {
            let s0 = f64::from(x) + k * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        2.0 * (s1 * s1 + s2 * s2 - k * s1 * s2).sqrt() / samples.len() as f64
    }

    #[test]
    fn us_ringback_is_440_plus_480_two_on_four_off() {
        let r = ringback(Ringback::Us);
        assert_eq!(r.len(), 6 * 8000);
        let on = &r[4000..12000];
        // -16 dBFS split over two components: about 2596 each.
        assert!(level(on, 440.0) > 2400.0 && level(on, 480.0) > 2400.0);
        assert!(level(on, 1000.0) < 100.0);
        assert!(r[17000..48000].iter().all(|&s| s == 0), "silent 4 s");
    }

    #[test]
    fn busy_is_480_plus_620_half_on_half_off() {
        let b = busy();
        assert_eq!(b.len(), 8000);
        assert!(level(&b[400..3600], 480.0) > 2400.0 && level(&b[400..3600], 620.0) > 2400.0);
        assert!(b[4100..8000].iter().all(|&s| s == 0), "silent 0.5 s");
    }

    #[test]
    fn eu_and_uk_cadences() {
        let eu = ringback(Ringback::Eu);
        assert_eq!(eu.len(), 5 * 8000);
        assert!(level(&eu[800..7200], 425.0) > 4800.0);
        let uk = ringback(Ringback::Uk);
        assert_eq!(uk.len(), 3 * 8000);
        assert!(uk[3300..4700].iter().all(|&s| s == 0), "0.2 s gap");
        assert_eq!(Ringback::from_name("UK"), Some(Ringback::Uk));
        assert_eq!(Ringback::from_name("mars"), None);
    }
}
