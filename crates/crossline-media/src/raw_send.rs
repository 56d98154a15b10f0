//! Every stream's RTP through one raw IPv4 socket per audio loop.
//!
//! Each stream owns a UDP port (symmetric RTP: the caller's NAT and SBC
//! latch on it), so through its own socket a tick has one datagram to
//! send, and the kernel's per-socket work (the socket's file, its state,
//! its route), cold in the cache when thousands of sockets take turns,
//! costs more than the send itself (benches/README.md section 10). A raw
//! socket (`IPPROTO_RAW`: we write the IPv4 and UDP headers) may send a
//! datagram from any port, so one socket, hot in the cache, sends every
//! stream's packet, [`SEND_BATCH`] to a `sendmmsg` call. The far end sees
//! the same datagram from the same address and port; each stream keeps its
//! UDP socket, bound, for what comes in.
//!
//! Opening one needs CAP_NET_RAW (root, as the loops' SCHED_FIFO does);
//! without it [`RawSender::open`] fails and the loop sends through each
//! stream's own socket. IPv4 from a specific address only: an IPv6 stream,
//! or one bound to 0.0.0.0 (whose source address the kernel would pick,
//! and the UDP checksum covers), takes the socket path.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::batch_io::{send_batch, SEND_BATCH};

const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const SLOT: usize = 1024;
/// The largest payload [`RawSender::push`] takes: RTP with 60 ms of G.711
/// and header extensions fits.
pub const MAX_PAYLOAD: usize = SLOT - IP_HEADER - UDP_HEADER;
/// Send buffer for the batches of a sub-tick in flight at once (a slow
/// NIC's queue holds them until sent).
const SEND_BUFFER_BYTES: libc::c_int = 8 << 20;

/// A raw socket and one batch of datagrams waiting for it.
pub struct RawSender {
    socket: OwnedFd,
    slots: Box<[[u8; SLOT]; SEND_BATCH]>,
    lens: [usize; SEND_BATCH],
    destinations: [SocketAddr; SEND_BATCH],
    queued: usize,
    ip_id: u16,
    sent: u64,
    refused: u64,
}

impl std::fmt::Debug for RawSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawSender")
            .field("queued", &self.queued)
            .finish()
    }
}

impl RawSender {
    /// Open the raw socket; fails without CAP_NET_RAW.
    pub fn open() -> io::Result<RawSender> {
        // SAFETY: socket() takes plain ints and returns a new fd or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_RAW,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // Past net.core.wmem_max where allowed (root), else up to it.
        if set_int(&socket, libc::SO_SNDBUFFORCE, SEND_BUFFER_BYTES).is_err() {
            let _ = set_int(&socket, libc::SO_SNDBUF, SEND_BUFFER_BYTES);
        }
        Ok(RawSender {
            socket,
            slots: Box::new([[0; SLOT]; SEND_BATCH]),
            lens: [0; SEND_BATCH],
            destinations: [SocketAddr::from(([0, 0, 0, 0], 0)); SEND_BATCH],
            queued: 0,
            ip_id: 0,
            sent: 0,
            refused: 0,
        })
    }

    /// Queue one UDP datagram from `from` to `to`, sending the batch when
    /// it is full. False, with nothing queued, when `payload` is larger
    /// than [`MAX_PAYLOAD`] or `from` has no specific address: send it
    /// through the stream's socket instead.
    pub fn push(&mut self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD || from.ip().is_unspecified() {
            return false;
        }
        if self.queued == SEND_BATCH {
            self.flush();
        }
        let (Some(slot), Some(len), Some(destination)) = (
            self.slots.get_mut(self.queued),
            self.lens.get_mut(self.queued),
            self.destinations.get_mut(self.queued),
        ) else {
            return false;
        };
        // With the don't-fragment bit set the ID means nothing; a non-zero
        // one keeps the kernel from drawing one from its shared table.
        self.ip_id = self.ip_id.wrapping_add(1).max(1);
        let Some(written) = write_datagram(slot, from, to, self.ip_id, payload) else {
            return false;
        };
        *len = written;
        *destination = SocketAddr::V4(to);
        self.queued += 1;
        true
    }

    /// Send what is queued, in one `sendmmsg`.
    pub fn flush(&mut self) {
        let queued = std::mem::take(&mut self.queued);
        if queued == 0 {
            return;
        }
        let mut messages: [(&[u8], SocketAddr); SEND_BATCH] =
            [(&[], SocketAddr::from(([0, 0, 0, 0], 0))); SEND_BATCH];
        for (message, ((slot, len), to)) in messages.iter_mut().zip(
            self.slots
                .iter()
                .zip(self.lens.iter())
                .zip(self.destinations.iter()),
        ) {
            *message = (slot.get(..*len).unwrap_or_default(), *to);
        }
        let batch = messages.get(..queued).unwrap_or_default();
        let sent = send_batch(&self.socket, batch).unwrap_or(0);
        self.sent += sent as u64;
        self.refused += (queued - sent.min(queued)) as u64;
    }

    /// Datagrams the kernel took, and refused, since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.sent),
            std::mem::take(&mut self.refused),
        )
    }
}

fn set_int(socket: &OwnedFd, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: a plain int option on a socket we hold open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Write the IPv4 and UDP headers and `payload` into `slot`; the length
/// written. The kernel fills in the IPv4 header checksum (and would the
/// length); the UDP checksum is ours.
fn write_datagram(
    slot: &mut [u8],
    from: SocketAddrV4,
    to: SocketAddrV4,
    ip_id: u16,
    payload: &[u8],
) -> Option<usize> {
    let udp_len = UDP_HEADER + payload.len();
    let total = IP_HEADER + udp_len;
    let (headers, body) = slot.get_mut(..total)?.split_at_mut(IP_HEADER + UDP_HEADER);
    body.copy_from_slice(payload);
    let (src, dst) = (from.ip().octets(), to.ip().octets());
    let [total_hi, total_lo] = u16::try_from(total).ok()?.to_be_bytes();
    let [id_hi, id_lo] = ip_id.to_be_bytes();
    let [sport_hi, sport_lo] = from.port().to_be_bytes();
    let [dport_hi, dport_lo] = to.port().to_be_bytes();
    let [len_hi, len_lo] = u16::try_from(udp_len).ok()?.to_be_bytes();
    #[rustfmt::skip]
    let header: [u8; IP_HEADER + UDP_HEADER] = [
        0x45, 0, total_hi, total_lo,             // IPv4, 20-byte header, length
        id_hi, id_lo, 0x40, 0,                   // ID, don't fragment
        64, libc::IPPROTO_UDP as u8, 0, 0,       // TTL, UDP, checksum (the kernel's)
        src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
        sport_hi, sport_lo, dport_hi, dport_lo,  // UDP ports
        len_hi, len_lo, 0, 0,                    // length, checksum (below)
    ];
    headers.copy_from_slice(&header);
    let checksum = udp_checksum(*from.ip(), *to.ip(), header.get(IP_HEADER..)?, payload);
    headers
        .get_mut(IP_HEADER + 6..IP_HEADER + 8)?
        .copy_from_slice(&checksum.to_be_bytes());
    Some(total)
}

/// The UDP checksum over the IPv4 pseudo-header, the UDP header (its
/// checksum field zero) and the payload (RFC 768). Zero goes out as
/// 0xFFFF, since zero means "no checksum".
fn udp_checksum(src: Ipv4Addr, dst: Ipv4Addr, udp_header: &[u8], payload: &[u8]) -> u16 {
    let udp_len = (udp_header.len() + payload.len()) as u64;
    let mut sum = add_words(&src.octets(), 0);
    sum = add_words(&dst.octets(), sum);
    sum += u64::from(libc::IPPROTO_UDP as u8) + udp_len;
    sum = add_words(udp_header, sum);
    sum = add_words(payload, sum);
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    match !(sum as u16) {
        0 => 0xFFFF,
        c => c,
    }
}

/// Add `bytes` as big-endian 16-bit words (an odd last byte padded with
/// zero) to `sum`, unfolded.
fn add_words(bytes: &[u8], mut sum: u64) -> u64 {
    let mut words = bytes.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// The checksum of a datagram whose checksum field is filled in sums
    /// to 0xFFFF (RFC 1071); a known vector from a captured datagram.
    #[test]
    fn udp_checksum_matches_a_captured_datagram() {
        // 127.0.0.1:40000 -> 127.0.0.1:5004, payload "abc".
        let header = [0x9c, 0x40, 0x13, 0x8c, 0x00, 0x0b, 0, 0];
        let c = udp_checksum(Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST, &header, b"abc");
        let mut filled = header;
        filled[6..8].copy_from_slice(&c.to_be_bytes());
        let mut sum = add_words(&Ipv4Addr::LOCALHOST.octets(), 0);
        sum = add_words(&Ipv4Addr::LOCALHOST.octets(), sum);
        sum += 17 + 11;
        sum = add_words(&filled, sum);
        sum = add_words(b"abc", sum);
        while sum > 0xFFFF {
            sum = (sum & 0xFFFF) + (sum >> 16);
        }
        assert_eq!(sum, 0xFFFF);
        assert_eq!(c, 0x8da6);
    }

    /// What a raw send delivers is what the stream's own socket would:
    /// the same bytes, from the stream's port, accepted by the receiving
    /// kernel (which checks the UDP checksum), odd and even lengths, over
    /// more than one batch. Needs CAP_NET_RAW, as the gateway does for
    /// this path; the suite runs as root (scripts/test.sh).
    #[test]
    fn delivers_datagrams_from_the_streams_own_port() {
        let mut raw = RawSender::open()
            .expect("a raw socket needs CAP_NET_RAW: run the tests as root (scripts/test.sh does)");
        let stream = UdpSocket::bind("127.0.0.1:0").unwrap();
        let from = match stream.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let far = UdpSocket::bind("127.0.0.1:0").unwrap();
        far.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let to = match far.local_addr().unwrap() {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let payloads: Vec<Vec<u8>> = (0..SEND_BATCH + 7)
            .map(|i| (0..(100 + i)).map(|b| (b * 7 + i) as u8).collect())
            .collect();
        for p in &payloads {
            assert!(raw.push(from, to, p));
        }
        raw.flush();
        assert_eq!(raw.take_counts(), (payloads.len() as u64, 0));
        let mut buf = [0u8; 2048];
        for p in &payloads {
            let (n, source) = far.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], &p[..]);
            assert_eq!(source, SocketAddr::V4(from));
        }
        // Replies reach the stream's own socket.
        far.send_to(b"back", SocketAddr::V4(from)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        assert_eq!(stream.recv_from(&mut buf).unwrap().0, 4);
        // Too big, or no specific source address: the socket path's.
        assert!(!raw.push(from, to, &[0; MAX_PAYLOAD + 1]));
        assert!(!raw.push(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9), to, b"x"));
        raw.flush();
        assert_eq!(raw.take_counts(), (0, 0));

        // The receiving kernel does check the checksum: a wrong one is
        // dropped, so the deliveries above vouch for ours.
        let mut slot = [0u8; SLOT];
        let n = write_datagram(&mut slot, from, to, 1, b"bad sum").unwrap();
        slot[IP_HEADER + 6] ^= 0x5a;
        send_batch(&raw.socket, &[(&slot[..n], SocketAddr::V4(to))]).unwrap();
        far.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            far.recv_from(&mut buf).is_err(),
            "a bad checksum got through"
        );
    }
}
