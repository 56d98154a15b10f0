//! Several UDP datagrams per system call: `recvmmsg` drains a socket's
//! queue in one call, `sendmmsg` sends many messages (each to its own
//! destination) through one socket in one call. A safe API over the two
//! calls; the unsafe parts are here and nowhere else.
//!
//! Both are non-blocking (`MSG_DONTWAIT`) whatever the socket's mode.
//!
//! The audio loop reads with `recv_from`, by measurement (benches/README.md,
//! section 10): on the kernels measured, `recvmmsg` costs more for an
//! empty queue (the common poll) and no less for a few queued packets.
//! Each stream owns its port, so its UDP socket has one datagram a tick
//! to send; the loop batches sends across streams through one raw socket
//! instead ([`crate::raw_send`], which sends through [`send_batch`]), and
//! the floor benchmark (`benches/udp_batch.rs`) uses it too.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// The most datagrams one [`RecvBatch::recv`] returns.
pub const RECV_BATCH: usize = 8;
/// Room for one datagram: RTP with 60 ms of G.711 and extensions fits.
pub const DATAGRAM_MAX: usize = 2048;
/// The most messages one `sendmmsg` call takes in [`send_batch`]; longer
/// slices go in several calls.
pub const SEND_BATCH: usize = 64;

/// Buffers for up to [`RECV_BATCH`] datagrams and their sources, reused
/// from call to call (no allocation after [`RecvBatch::new`]).
pub struct RecvBatch {
    bufs: Box<[[u8; DATAGRAM_MAX]; RECV_BATCH]>,
    lens: [usize; RECV_BATCH],
    from: [Option<SocketAddr>; RECV_BATCH],
    count: usize,
}

impl Default for RecvBatch {
    fn default() -> Self {
        RecvBatch::new()
    }
}

impl RecvBatch {
    /// Empty buffers (16 KiB, on the heap).
    pub fn new() -> RecvBatch {
        RecvBatch {
            bufs: Box::new([[0; DATAGRAM_MAX]; RECV_BATCH]),
            lens: [0; RECV_BATCH],
            from: [None; RECV_BATCH],
            count: 0,
        }
    }

    /// Take whatever the socket holds, up to [`RECV_BATCH`] datagrams, in
    /// one `recvmmsg`. `Ok(0)` when nothing is queued. Fewer than
    /// [`RECV_BATCH`] means the queue was drained; exactly that many, call
    /// again. Datagrams longer than [`DATAGRAM_MAX`] come back truncated.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        self.count = 0;
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut names: [libc::sockaddr_storage; RECV_BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; RECV_BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; RECV_BATCH] = unsafe { zeroed() };
        for ((buf, iov), (hdr, name)) in self
            .bufs
            .iter_mut()
            .zip(iovecs.iter_mut())
            .zip(headers.iter_mut().zip(names.iter_mut()))
        {
            iov.iov_base = buf.as_mut_ptr().cast();
            iov.iov_len = buf.len();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            hdr.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        }
        // SAFETY: every header points at an iovec over a live buffer of its
        // stated length and at a sockaddr_storage of its stated size, all
        // of which outlive the call; vlen is the array's length.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.kind() {
                io::ErrorKind::WouldBlock => Ok(0),
                _ => Err(err),
            };
        }
        let n = (n as usize).min(RECV_BATCH);
        for i in 0..n {
            let (Some(hdr), Some(name)) = (headers.get(i), names.get(i)) else {
                break;
            };
            if let (Some(len), Some(from)) = (self.lens.get_mut(i), self.from.get_mut(i)) {
                *len = (hdr.msg_len as usize).min(DATAGRAM_MAX);
                *from = socket_addr(name);
            }
        }
        self.count = n;
        Ok(n)
    }

    /// The datagrams the last [`RecvBatch::recv`] returned, with their
    /// sources (one whose source isn't IPv4 or IPv6 is skipped).
    pub fn packets(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> {
        self.bufs
            .iter()
            .zip(self.lens.iter().zip(self.from.iter()))
            .take(self.count)
            .filter_map(|(buf, (&len, from))| Some((buf.get(..len)?, (*from)?)))
    }
}

/// Send each `(bytes, destination)` through `socket`, [`SEND_BATCH`] to a
/// `sendmmsg` call. Returns how many were sent; the rest were refused (a
/// full send buffer, an unreachable destination) and are dropped, as a
/// lost datagram would be. An error (the last refusal's) only when none
/// went out.
pub fn send_batch(socket: &impl AsRawFd, messages: &[(&[u8], SocketAddr)]) -> io::Result<usize> {
    let mut sent = 0;
    let mut refused = None;
    for chunk in messages.chunks(SEND_BATCH) {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let mut names: [libc::sockaddr_storage; SEND_BATCH] = unsafe { zeroed() };
        let mut iovecs: [libc::iovec; SEND_BATCH] = unsafe { zeroed() };
        let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { zeroed() };
        for ((&(bytes, to), iov), (hdr, name)) in chunk
            .iter()
            .zip(iovecs.iter_mut())
            .zip(headers.iter_mut().zip(names.iter_mut()))
        {
            // sendmsg only reads the buffer, whatever the iovec's mutability.
            iov.iov_base = bytes.as_ptr().cast_mut().cast();
            iov.iov_len = bytes.len();
            hdr.msg_hdr.msg_iov = iov;
            hdr.msg_hdr.msg_iovlen = 1;
            hdr.msg_hdr.msg_namelen = write_sockaddr(to, name);
            hdr.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
        }
        let mut offset = 0;
        while offset < chunk.len() {
            let Some(pending) = headers.get_mut(offset..chunk.len()) else {
                break;
            };
            // SAFETY: each header points at an iovec over a live slice and
            // at a sockaddr of its stated length, all outliving the call;
            // vlen is the number of headers passed.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    pending.as_mut_ptr(),
                    pending.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if n <= 0 {
                // The kernel stops at the first message it refuses: skip it.
                refused = Some(io::Error::last_os_error());
                offset += 1;
            } else {
                sent += n as usize;
                offset += n as usize;
            }
        }
    }
    match refused {
        Some(err) if sent == 0 => Err(err),
        _ => Ok(sent),
    }
}

/// A C socket address for `addr` in `storage`; returns its length.
fn write_sockaddr(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
    let ptr: *mut libc::sockaddr_storage = storage;
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            unsafe { ptr.cast::<libc::sockaddr_in>().write(sin) };
            size_of::<libc::sockaddr_in>() as libc::socklen_t
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            unsafe { ptr.cast::<libc::sockaddr_in6>().write(sin6) };
            size_of::<libc::sockaddr_in6>() as libc::socklen_t
        }
    }
}

/// The address the kernel wrote into `storage`, if IPv4 or IPv6.
fn socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    let ptr: *const libc::sockaddr_storage = storage;
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the kernel wrote a sockaddr_in here.
            let sin = unsafe { ptr.cast::<libc::sockaddr_in>().read() };
            let ip = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the kernel wrote a sockaddr_in6 here.
            let sin6 = unsafe { ptr.cast::<libc::sockaddr_in6>().read() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                u32::from_be(sin6.sin6_flowinfo),
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn bound(addr: &str) -> UdpSocket {
        UdpSocket::bind(addr).unwrap()
    }

    #[test]
    fn recv_drains_the_queue_in_batches_with_each_source() {
        let ours = bound("127.0.0.1:0");
        let a = bound("127.0.0.1:0");
        let b = bound("127.0.0.1:0");
        let to = ours.local_addr().unwrap();
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(&ours).unwrap(), 0, "nothing queued: no wait");
        for i in 0..(RECV_BATCH as u8 + 3) {
            let from = if i % 2 == 0 { &a } else { &b };
            from.send_to(&[i; 5][..usize::from(i % 5) + 1], to).unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(batch.recv(&ours).unwrap(), RECV_BATCH);
        let got: Vec<(Vec<u8>, SocketAddr)> =
            batch.packets().map(|(d, f)| (d.to_vec(), f)).collect();
        assert_eq!(got.len(), RECV_BATCH);
        for (i, (data, from)) in got.iter().enumerate() {
            let i = i as u8;
            assert_eq!(data, &vec![i; usize::from(i % 5) + 1]);
            let sender = if i % 2 == 0 { &a } else { &b };
            assert_eq!(*from, sender.local_addr().unwrap());
        }
        assert_eq!(batch.recv(&ours).unwrap(), 3);
        assert_eq!(batch.packets().next().unwrap().0, &[8; 4]);
        assert_eq!(batch.recv(&ours).unwrap(), 0);
        assert_eq!(batch.packets().count(), 0);
    }

    #[test]
    fn recv_truncates_an_oversized_datagram_and_reads_ipv6_sources() {
        let ours = bound("[::1]:0");
        let peer = bound("[::1]:0");
        peer.send_to(&[7; DATAGRAM_MAX + 100], ours.local_addr().unwrap())
            .unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut batch = RecvBatch::new();
        assert_eq!(batch.recv(&ours).unwrap(), 1);
        let (data, from) = batch.packets().next().unwrap();
        assert_eq!(data.len(), DATAGRAM_MAX);
        assert_eq!(from, peer.local_addr().unwrap());
    }

    #[test]
    fn send_batch_reaches_each_destination_in_order_and_across_calls() {
        let ours = bound("127.0.0.1:0");
        let sinks: Vec<UdpSocket> = (0..3).map(|_| bound("127.0.0.1:0")).collect();
        for s in &sinks {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        // More than one sendmmsg call's worth.
        let payloads: Vec<[u8; 3]> = (0..(SEND_BATCH as u8 + 6)).map(|i| [i, 1, 2]).collect();
        let messages: Vec<(&[u8], SocketAddr)> = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (&p[..], sinks[i % 3].local_addr().unwrap()))
            .collect();
        assert_eq!(send_batch(&ours, &messages).unwrap(), messages.len());
        let mut buf = [0u8; 16];
        for (i, _) in payloads.iter().enumerate() {
            let (n, from) = sinks[i % 3].recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &[i as u8, 1, 2]);
            assert_eq!(from, ours.local_addr().unwrap());
        }
        assert_eq!(send_batch(&ours, &[]).unwrap(), 0);
    }

    #[test]
    fn send_batch_skips_a_refused_message_and_sends_the_rest() {
        let ours = bound("127.0.0.1:0");
        let sink = bound("127.0.0.1:0");
        sink.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = sink.local_addr().unwrap();
        // An IPv6 destination from an IPv4 socket is refused (EAFNOSUPPORT).
        let v6: SocketAddr = "[::1]:9".parse().unwrap();
        let messages: [(&[u8], SocketAddr); 3] = [(b"a", to), (b"b", v6), (b"c", to)];
        assert_eq!(send_batch(&ours, &messages).unwrap(), 2);
        let mut buf = [0u8; 4];
        assert_eq!(sink.recv_from(&mut buf).unwrap().0, 1);
        assert_eq!(buf[0], b'a');
        sink.recv_from(&mut buf).unwrap();
        assert_eq!(buf[0], b'c');
        // Only a refused message: the kernel's reason comes back.
        assert!(send_batch(&ours, &[(b"x", v6)]).is_err());
    }
}
