//! RTP port allocation from the configured range. Even ports only (RTP), so
//! the odd neighbour stays free for RTCP.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

/// Why no RTP port could be handed out.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// Every pair is in use, here or (failing to bind) by another process.
    #[error("no free RTP port in {min}..={max}")]
    Exhausted {
        /// Lowest port of the range.
        min: u16,
        /// Highest port of the range.
        max: u16,
    },
}

/// A bound RTP/RTCP socket pair.
#[derive(Debug)]
pub struct RtpPorts {
    /// The RTP port (even); RTCP is on the next one.
    pub port: u16,
    /// Bound to `port`.
    pub rtp: UdpSocket,
    /// Bound to `port + 1`.
    pub rtcp: UdpSocket,
}

/// The configured RTP range's free even ports, shared by every call.
pub struct PortPool {
    address: IpAddr,
    min: u16,
    max: u16,
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    /// A pool of the even ports in `min..=max` whose RTCP port (+1) is in
    /// the range too.
    pub fn new(address: IpAddr, min: u16, max: u16) -> PortPool {
        let start = min + (min % 2);
        // The RTCP port (port + 1) must be in range too.
        let free = (start..max).step_by(2).collect();
        PortPool {
            address,
            min,
            max,
            free: Mutex::new(free),
        }
    }

    /// Take an even port and bind it for RTP and the odd one above it for
    /// RTCP. Pairs that fail to bind (taken by someone else) go to the back
    /// of the queue.
    pub fn allocate(&self) -> Result<RtpPorts, PortError> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..free.len() {
            let Some(port) = free.pop_front() else {
                break;
            };
            let rtp = UdpSocket::bind(SocketAddr::new(self.address, port));
            let rtcp = UdpSocket::bind(SocketAddr::new(self.address, port.wrapping_add(1)));
            match (rtp, rtcp) {
                (Ok(rtp), Ok(rtcp)) => return Ok(RtpPorts { port, rtp, rtcp }),
                _ => free.push_back(port),
            }
        }
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    /// Give a port back once its stream has stopped.
    pub fn release(&self, port: u16) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push_back(port);
    }

    /// Ports free to allocate now.
    pub fn available(&self) -> usize {
        // Poisoned still counts: allocate and release go on using the list.
        self.free
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// The address every port is bound on.
    pub fn address(&self) -> IpAddr {
        self.address
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_even_ports_and_reuses_released_ones() {
        let pool = PortPool::new(IpAddr::from([127, 0, 0, 1]), 41001, 41010);
        // 41002..41008 even, each with its RTCP neighbour inside the range.
        assert_eq!(pool.available(), 4);
        let a = pool.allocate().unwrap();
        assert_eq!(a.port % 2, 0);
        assert_eq!(a.rtcp.local_addr().unwrap().port(), a.port + 1);
        let b = pool.allocate().unwrap();
        assert_ne!(a.port, b.port);
        assert_eq!(pool.available(), 2);
        let port = a.port;
        drop(a);
        pool.release(port);
        assert_eq!(pool.available(), 3);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let pool = PortPool::new(IpAddr::from([127, 0, 0, 1]), 41020, 41021);
        assert_eq!(pool.available(), 1);
        let _held = pool.allocate().unwrap();
        assert!(matches!(pool.allocate(), Err(PortError::Exhausted { .. })));
    }
}
