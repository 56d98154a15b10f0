//! The order to try what a lookup found: NAPTR sets in their order, SRV
//! priorities lowest first, and within one priority RFC 2782's weighted
//! random pick, repeated until the group is used up. The generator is
//! call control's, seeded from `[sip] random_seed`, so a test run replays.

use std::collections::HashSet;
use std::net::SocketAddr;

use rand::rngs::StdRng;
use rand::RngExt as _;

use super::{Candidate, Resolution, Target};

/// Every address of `res`, in the order to try them (no repeats).
pub fn order(res: &Resolution, rng: &mut StdRng) -> Vec<Target> {
    let mut candidates: Vec<&Candidate> = res.candidates.iter().collect();
    // Stable: records keep their DNS order within a set and priority.
    candidates.sort_by_key(|c| (c.set, c.priority));
    let mut ordered = Vec::with_capacity(candidates.len());
    let mut rest = candidates.as_slice();
    while let Some(first) = rest.first() {
        let key = (first.set, first.priority);
        let len = rest
            .iter()
            .take_while(|c| (c.set, c.priority) == key)
            .count();
        let (group, tail) = rest.split_at(len);
        weighted(group, rng, &mut ordered);
        rest = tail;
    }
    let mut seen = HashSet::new();
    ordered
        .into_iter()
        .flat_map(|c| {
            c.addrs.iter().map(move |ip| Target {
                addr: SocketAddr::new(*ip, c.port),
                transport: c.transport,
            })
        })
        .filter(|t| seen.insert(*t))
        .collect()
}

/// RFC 2782: zero weights first, then pick by running sum against a
/// uniform number in 0..=sum, remove the pick, repeat.
fn weighted<'a>(group: &[&'a Candidate], rng: &mut StdRng, out: &mut Vec<&'a Candidate>) {
    let mut left: Vec<&Candidate> = group.iter().filter(|c| c.weight == 0).copied().collect();
    left.extend(group.iter().filter(|c| c.weight != 0).copied());
    while !left.is_empty() {
        let sum: u32 = left.iter().map(|c| u32::from(c.weight)).sum();
        let pick = rng.random_range(0..=sum);
        let mut running = 0u32;
        let at = left
            .iter()
            .position(|c| {
                running += u32::from(c.weight);
                running >= pick
            })
            .unwrap_or(0);
        out.push(left.remove(at));
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng as _;

    use super::*;
    use crate::sip::endpoint::Transport;

    fn srv(set: usize, priority: u16, weight: u16, last: u8) -> Candidate {
        Candidate {
            set,
            transport: Transport::Udp,
            priority,
            weight,
            port: 5060,
            addrs: vec![[192, 0, 2, last].into()],
        }
    }

    fn first_octet(t: &[Target]) -> Vec<u8> {
        t.iter()
            .map(|t| match t.addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3],
                std::net::IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn priorities_and_sets_come_in_order() {
        let res = Resolution {
            candidates: vec![srv(1, 0, 10, 9), srv(0, 20, 10, 3), srv(0, 10, 10, 1)],
        };
        let mut rng = StdRng::seed_from_u64(7);
        assert_eq!(first_octet(&order(&res, &mut rng)), [1, 3, 9]);
    }

    #[test]
    fn weights_share_the_first_place_as_rfc_2782_says() {
        // 60/30/10 and a zero weight that may only come first by chance.
        let res = Resolution {
            candidates: vec![
                srv(0, 10, 60, 1),
                srv(0, 10, 30, 2),
                srv(0, 10, 10, 3),
                srv(0, 10, 0, 4),
            ],
        };
        let mut rng = StdRng::seed_from_u64(42);
        let mut firsts = [0usize; 5];
        for _ in 0..10_000 {
            let o = first_octet(&order(&res, &mut rng));
            assert_eq!(o.len(), 4, "every target once");
            firsts[usize::from(o[0])] += 1;
        }
        let share = |i: usize| firsts[i] as f64 / 10_000.0;
        assert!((share(1) - 0.6).abs() < 0.03, "{firsts:?}");
        assert!((share(2) - 0.3).abs() < 0.03, "{firsts:?}");
        assert!((share(3) - 0.1).abs() < 0.02, "{firsts:?}");
        assert!(share(4) < 0.02, "{firsts:?}");
    }

    #[test]
    fn the_same_seed_gives_the_same_order() {
        let res = Resolution {
            candidates: (1..=6).map(|i| srv(0, 0, 10, i)).collect(),
        };
        let a = order(&res, &mut StdRng::seed_from_u64(3));
        let b = order(&res, &mut StdRng::seed_from_u64(3));
        assert_eq!(a, b);
    }

    #[test]
    fn repeated_addresses_are_tried_once() {
        let res = Resolution {
            candidates: vec![srv(0, 0, 0, 1), srv(1, 0, 0, 1)],
        };
        assert_eq!(order(&res, &mut StdRng::seed_from_u64(1)).len(), 1);
    }
}
