//! Every stream's RTP through one raw IPv4 socket per audio loop.
//!
//! Each stream owns a UDP port (symmetric RTP: the caller's NAT and SBC
//! latch on it), so through its own socket a tick has one datagram to
//! send, and the kernel's per-socket work (the socket's file, its state,
//! its route), cold in the cache when thousands of sockets take turns,
//! costs more than the send itself (benches/README.md section 10). A raw
//! UDP socket (`SOCK_RAW`, `IPPROTO_UDP`: the kernel writes the IPv4
//! header, we write the UDP header) may send from any port, so one socket,
//! hot in the cache, sends every stream's packet, [`SEND_BATCH`] to a
//! `sendmmsg` call. The far end sees the same datagram from the same
//! address and port; each stream keeps its UDP socket, bound, for what
//! comes in.
//!
//! Two choices, each measured: the kernel writes the IPv4 header, because
//! with `IP_HDRINCL` (`IPPROTO_RAW`) every datagram takes an uncached route
//! of its own (about a third dearer a datagram); and the socket is
//! connected to 255.255.255.255, a source no datagram ever has, because a
//! raw UDP socket otherwise receives a copy of every UDP datagram for its
//! address (an explicit destination on each send overrides the connection).
//!
//! Opening one needs CAP_NET_RAW (root, as the loops' SCHED_FIFO does);
//! without it [`RawSender::open`] fails and the loop sends through each
//! stream's own socket. One source address per socket (the loop's first
//! IPv4 stream's; every call shares `rtp_address`): an IPv6 stream, one
//! bound to 0.0.0.0 (whose source address the kernel would pick, and the
//! UDP checksum covers), or one on another address takes the socket path.

use std::io;
use std::mem::size_of;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::batch_io::{send_batch, SEND_BATCH};

const UDP_HEADER: usize = 8;
const SLOT: usize = 1024;
/// The largest payload [`RawSender::push`] takes: RTP with 60 ms of G.711
/// and header extensions fits.
pub const MAX_PAYLOAD: usize = SLOT - UDP_HEADER;
/// Send buffer for the batches of a sub-tick in flight at once (a slow
/// NIC's queue holds them until sent).
const SEND_BUFFER_BYTES: libc::c_int = 8 << 20;

/// A raw socket and one batch of datagrams waiting for it.
pub struct RawSender {
    socket: OwnedFd,
    source: Ipv4Addr,
    slots: Box<[[u8; SLOT]; SEND_BATCH]>,
    lens: [usize; SEND_BATCH],
    destinations: [SocketAddr; SEND_BATCH],
    queued: usize,
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
    /// Open a raw socket sending from `source` (a local address); fails
    /// without CAP_NET_RAW.
    pub fn open(source: Ipv4Addr) -> io::Result<RawSender> {
        if source.is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a raw sender needs a specific source address",
            ));
        }
        // SAFETY: socket() takes plain ints and returns a new fd or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                libc::IPPROTO_UDP,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and nothing else owns it.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        // Past net.core.wmem_max where allowed (root), else up to it.
        if set_socket_int(
            &socket,
            libc::SOL_SOCKET,
            libc::SO_SNDBUFFORCE,
            SEND_BUFFER_BYTES,
        )
        .is_err()
        {
            let _ = set_socket_int(
                &socket,
                libc::SOL_SOCKET,
                libc::SO_SNDBUF,
                SEND_BUFFER_BYTES,
            );
        }
        // Don't fragment, and no IP ID drawn from the kernel's shared table.
        set_socket_int(
            &socket,
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            libc::IP_PMTUDISC_PROBE,
        )?;
        // Connecting to the limited broadcast address needs SO_BROADCAST,
        // only for the connect: cleared again, a send to a broadcast address
        // (an SDP can name one) is refused, as a call's own socket refuses it.
        set_socket_int(&socket, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
        connect_or_bind(&socket, source, false)?;
        connect_or_bind(&socket, Ipv4Addr::BROADCAST, true)?;
        set_socket_int(&socket, libc::SOL_SOCKET, libc::SO_BROADCAST, 0)?;
        Ok(RawSender {
            socket,
            source,
            slots: Box::new([[0; SLOT]; SEND_BATCH]),
            lens: [0; SEND_BATCH],
            destinations: [SocketAddr::from(([0, 0, 0, 0], 0)); SEND_BATCH],
            queued: 0,
            sent: 0,
            refused: 0,
        })
    }

    /// The address every datagram goes out from.
    pub fn source(&self) -> Ipv4Addr {
        self.source
    }

    /// Queue one UDP datagram from `from` to `to`, sending the batch when
    /// it is full. False, with nothing queued, when `payload` is larger
    /// than [`MAX_PAYLOAD`] or `from` is not on [`RawSender::source`]: send
    /// it through the stream's socket instead.
    pub fn push(&mut self, from: SocketAddrV4, to: SocketAddrV4, payload: &[u8]) -> bool {
        if payload.len() > MAX_PAYLOAD || *from.ip() != self.source {
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
        let Some(written) = write_datagram(slot, from, to, payload) else {
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

/// `bind` (or with `connect`, `connect`) the socket to `addr`, port 0.
fn connect_or_bind(socket: &OwnedFd, addr: Ipv4Addr, connect: bool) -> io::Result<()> {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    let ptr = (&sin as *const libc::sockaddr_in).cast::<libc::sockaddr>();
    let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a sockaddr_in of its stated length, on a socket we hold open.
    let rc = unsafe {
        if connect {
            libc::connect(socket.as_raw_fd(), ptr, len)
        } else {
            libc::bind(socket.as_raw_fd(), ptr, len)
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Set an integer socket option.
pub(crate) fn set_socket_int(
    socket: &impl AsRawFd,
    level: libc::c_int,
    option: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: a plain int option on a socket we hold open.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
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

/// Write the UDP header and `payload` into `slot`; the length written.
/// The kernel writes the IPv4 header; the UDP checksum is ours.
fn write_datagram(
    slot: &mut [u8],
    from: SocketAddrV4,
    to: SocketAddrV4,
    payload: &[u8],
) -> Option<usize> {
    let total = UDP_HEADER + payload.len();
    let (header, body) = slot.get_mut(..total)?.split_at_mut(UDP_HEADER);
    body.copy_from_slice(payload);
    let [sport_hi, sport_lo] = from.port().to_be_bytes();
    let [dport_hi, dport_lo] = to.port().to_be_bytes();
    let [len_hi, len_lo] = u16::try_from(total).ok()?.to_be_bytes();
    let fields = [sport_hi, sport_lo, dport_hi, dport_lo, len_hi, len_lo, 0, 0];
    header.copy_from_slice(&fields);
    let checksum = udp_checksum(*from.ip(), *to.ip(), &fields, payload);
    header
        .get_mut(6..8)?
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
        let mut raw = RawSender::open(Ipv4Addr::LOCALHOST)
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
        // ...and no copy of them reaches the raw socket (it is connected
        // to a source nothing has), which would cost a clone a datagram.
        let mut spare = [0u8; 64];
        // SAFETY: a buffer of its stated length, on a socket we hold open.
        let got = unsafe {
            libc::recv(
                raw.socket.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        assert_eq!(got, -1, "the raw socket received a copy");
        // Too big, or from another address: the socket path's.
        assert!(!raw.push(from, to, &[0; MAX_PAYLOAD + 1]));
        assert!(!raw.push(SocketAddrV4::new(Ipv4Addr::new(127, 0, 0, 2), 9), to, b"x"));
        assert!(RawSender::open(Ipv4Addr::UNSPECIFIED).is_err());
        // A broadcast destination is refused, as a UDP socket refuses it:
        // an SDP naming one must not make the gateway flood a LAN.
        assert!(raw.push(from, SocketAddrV4::new(Ipv4Addr::BROADCAST, 9), b"x"));
        raw.flush();
        assert_eq!(raw.take_counts(), (0, 1));
        raw.flush();
        assert_eq!(raw.take_counts(), (0, 0));

        // The receiving kernel does check the checksum: a wrong one is
        // dropped, so the deliveries above vouch for ours.
        let mut slot = [0u8; SLOT];
        let n = write_datagram(&mut slot, from, to, b"bad sum").unwrap();
        slot[6] ^= 0x5a;
        send_batch(&raw.socket, &[(&slot[..n], SocketAddr::V4(to))]).unwrap();
        far.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert!(
            far.recv_from(&mut buf).is_err(),
            "a bad checksum got through"
        );
    }
}
