//! RTP port allocation from the configured range. Even ports only (RTP), so
//! the odd neighbour stays free for RTCP.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("no free RTP port in {min}..={max}")]
    Exhausted { min: u16, max: u16 },
}

pub struct PortPool {
    address: IpAddr,
    min: u16,
    max: u16,
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    pub fn new(address: IpAddr, min: u16, max: u16) -> PortPool {
        let start = min + (min % 2);
        let free = (start..=max).step_by(2).collect();
        PortPool {
            address,
            min,
            max,
            free: Mutex::new(free),
        }
    }

    /// Take a port and bind it. Ports that fail to bind (taken by someone
    /// else) go to the back of the queue.
    pub fn allocate(&self) -> Result<(u16, UdpSocket), PortError> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..free.len() {
            let Some(port) = free.pop_front() else {
                break;
            };
            match UdpSocket::bind(SocketAddr::new(self.address, port)) {
                Ok(sock) => return Ok((port, sock)),
                Err(_) => free.push_back(port),
            }
        }
        Err(PortError::Exhausted {
            min: self.min,
            max: self.max,
        })
    }

    pub fn release(&self, port: u16) {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.push_back(port);
    }

    pub fn available(&self) -> usize {
        self.free.lock().map(|f| f.len()).unwrap_or(0)
    }

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
        assert_eq!(pool.available(), 5);
        let (a, sa) = pool.allocate().unwrap();
        assert_eq!(a % 2, 0);
        let (b, _sb) = pool.allocate().unwrap();
        assert_ne!(a, b);
        assert_eq!(pool.available(), 3);
        drop(sa);
        pool.release(a);
        assert_eq!(pool.available(), 4);
    }

    #[test]
    fn exhaustion_is_an_error() {
        let pool = PortPool::new(IpAddr::from([127, 0, 0, 1]), 41020, 41021);
        let _held = pool.allocate().unwrap();
        assert!(matches!(pool.allocate(), Err(PortError::Exhausted { .. })));
    }
}
