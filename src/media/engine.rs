//! The control side of media: audio loop threads, the RTP port pool and the
//! shared decoded clips. Called from the call-control task only.
//!
//! It stays in the application, not in `crossline-media`, because it speaks
//! the SIP core's negotiated SDP and the control task's tokio channel.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::audio_loop::{
    self, AudioLoopHandle, Command, Encoding, EventSink, LoopOptions, MediaEvent, Source, StreamId,
    StreamSpec,
};
use super::clips::ClipCache;
use super::ports::{PortError, PortPool};
use crate::sdp::{Codec, Negotiated};

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error(transparent)]
    Ports(#[from] PortError),
    #[error("audio loop {0} is not keeping up (command queue full)")]
    Busy(usize),
    #[error("cannot load audio {path}: {message}")]
    Audio { path: PathBuf, message: String },
    #[error("cannot start audio thread: {0}")]
    Thread(std::io::Error),
}

/// Audio loop events into the control task's channel. Unbounded: events
/// are rare, and the real-time thread must never wait on the control side.
struct ToControl(mpsc::UnboundedSender<MediaEvent>);

impl EventSink for ToControl {
    fn send(&self, event: MediaEvent) {
        // Closed only when the control task has gone (shutdown).
        let _ = self.0.send(event);
    }
}

pub struct MediaSettings {
    pub rtp_address: IpAddr,
    pub port_min: u16,
    pub port_max: u16,
    pub threads: usize,
    pub audio_dir: PathBuf,
    pub rtp_timeout: Duration,
    pub realtime_priority: i32,
    pub pin_threads: bool,
    pub rx_poll_ticks: u32,
    /// Send IPv4 RTP through one raw socket per loop where permitted.
    pub raw_send: bool,
    /// The longest an audio loop sleeps at once; `None`: to each deadline.
    pub loop_max_sleep: Option<Duration>,
    /// Seeds the audio loops' stream starts (loop i: seed + i); `None`:
    /// OS entropy. See `[sip] random_seed`.
    pub random_seed: Option<u64>,
}

struct StreamSlot {
    loop_index: usize,
    port: u16,
}

/// A stream on its way to its partner's loop, to be bridged there (two
/// calls that started apart, joined later).
struct Moving {
    partner: StreamId,
    /// Commands for it meanwhile, sent once it arrives.
    held: Vec<Command>,
}

/// A port reserved for a call before the stream starts (SDP needs it).
/// Dropping it gives the port back, so no path can leak one.
pub struct Reservation {
    pub port: u16,
    sockets: Option<super::ports::RtpPorts>,
    pool: std::sync::Arc<PortPool>,
}

impl Reservation {
    /// Hand the sockets to a stream; the stream's slot now owns the port.
    fn take_sockets(mut self) -> Option<super::ports::RtpPorts> {
        self.sockets.take()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(sockets) = self.sockets.take() {
            drop(sockets);
            self.pool.release(self.port);
        }
    }
}

/// Reserves RTP ports from a [`MediaEngine`]'s pool.
#[derive(Clone)]
pub struct PortReserver {
    ports: std::sync::Arc<PortPool>,
}

impl PortReserver {
    pub fn reserve(&self) -> Result<Reservation, MediaError> {
        let sockets = self.ports.allocate()?;
        Ok(Reservation {
            port: sockets.port,
            sockets: Some(sockets),
            pool: self.ports.clone(),
        })
    }
}

pub struct MediaEngine {
    loops: Vec<AudioLoopHandle>,
    ports: std::sync::Arc<PortPool>,
    clips: Arc<ClipCache>,
    streams: HashMap<StreamId, StreamSlot>,
    next_loop: usize,
    settings: MediaSettings,
    /// Recorded streams' counters: pausing a recording flips a flag the
    /// loop reads, with no command through the ring.
    recordings: HashMap<StreamId, Arc<crate::media::record_tap::TapCounters>>,
    moving: HashMap<StreamId, Moving>,
}

impl MediaEngine {
    pub fn start(
        settings: MediaSettings,
    ) -> Result<(MediaEngine, mpsc::UnboundedReceiver<MediaEvent>), MediaError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = if settings.threads == 0 {
            cpus
        } else {
            settings.threads
        };
        let mut loops = Vec::with_capacity(threads);
        for i in 0..threads {
            let options = LoopOptions {
                realtime_priority: settings.realtime_priority,
                cpu: settings.pin_threads.then_some(i % cpus),
                rx_poll_ticks: settings.rx_poll_ticks,
                raw_send: settings.raw_send,
                max_sleep: settings.loop_max_sleep,
                random_seed: settings.random_seed,
            };
            loops.push(
                audio_loop::spawn(i, 8192, options, ToControl(tx.clone()))
                    .map_err(MediaError::Thread)?,
            );
        }
        let ports = std::sync::Arc::new(PortPool::new(
            settings.rtp_address,
            settings.port_min,
            settings.port_max,
        ));
        Ok((
            MediaEngine {
                loops,
                ports,
                clips: Arc::new(ClipCache::new()),
                streams: HashMap::new(),
                next_loop: 0,
                settings,
                recordings: HashMap::new(),
                moving: HashMap::new(),
            },
            rx,
        ))
    }

    pub fn rtp_address(&self) -> IpAddr {
        self.settings.rtp_address
    }

    /// Decode a WAV once (relative names resolve in the audio directory) and
    /// keep it for every later call.
    pub fn clip(&mut self, name: &Path) -> Result<Arc<[i16]>, MediaError> {
        let path = if name.is_absolute() {
            name.to_path_buf()
        } else {
            self.settings.audio_dir.join(name)
        };
        self.clips.get(&path).map_err(|e| MediaError::Audio {
            path: path.clone(),
            message: e.to_string(),
        })
    }

    /// The clip cache, shared with flows.
    pub fn clip_cache(&self) -> Arc<ClipCache> {
        self.clips.clone()
    }

    pub fn reserve(&self) -> Result<Reservation, MediaError> {
        self.reserver().reserve()
    }

    /// A handle that reserves ports from this engine's pool: call control
    /// holds one, so it can answer without reaching into the engine.
    pub fn reserver(&self) -> PortReserver {
        PortReserver {
            ports: self.ports.clone(),
        }
    }

    /// Give back a reservation that never became a stream.
    pub fn cancel(&self, r: Reservation) {
        drop(r);
    }

    pub fn start_stream(
        &mut self,
        id: StreamId,
        reservation: Reservation,
        media: &Negotiated,
        source: Source,
    ) -> Result<(), MediaError> {
        let loop_index = self.next_loop % self.loops.len().max(1);
        self.next_loop = self.next_loop.wrapping_add(1);
        self.start_on(loop_index, id, reservation, media, source)
    }

    /// Start a stream on the same audio loop as `near`, so the two can be
    /// bridged without crossing threads.
    pub fn start_stream_near(
        &mut self,
        near: StreamId,
        id: StreamId,
        reservation: Reservation,
        media: &Negotiated,
        source: Source,
    ) -> Result<(), MediaError> {
        let loop_index = match self.streams.get(&near) {
            Some(slot) => slot.loop_index,
            None => {
                let i = self.next_loop % self.loops.len().max(1);
                self.next_loop = self.next_loop.wrapping_add(1);
                i
            }
        };
        self.start_on(loop_index, id, reservation, media, source)
    }

    /// Relay audio (and DTMF) between two streams. Started with
    /// [`MediaEngine::start_stream_near`] they share a loop; otherwise `b`
    /// first moves to `a`'s loop (detached there, [`MediaEngine::adopt`]ed
    /// here) and the bridge follows.
    pub fn bridge(&mut self, a: StreamId, b: StreamId) {
        let (Some(to), Some(from)) = (self.loop_of(a), self.loop_of(b)) else {
            return;
        };
        if let Some(m) = self.moving.get_mut(&b) {
            m.partner = a;
            return;
        }
        if to == from {
            return self.command(a, Command::Bridge(a, b));
        }
        let detach = Command::Detach(b, audio_loop::MovingStream::boxed());
        if self
            .loops
            .get_mut(from)
            .map(|l| l.send(detach))
            .is_none_or(|r| r.is_err())
        {
            tracing::warn!(stream = b, "audio loop busy: the streams stay unbridged");
            return;
        }
        tracing::debug!(
            stream = b,
            from,
            to,
            "bridge: the stream moves to its partner's loop"
        );
        if let Some(slot) = self.streams.get_mut(&b) {
            slot.loop_index = to;
        }
        self.moving.insert(
            b,
            Moving {
                partner: a,
                held: Vec::new(),
            },
        );
    }

    fn loop_of(&self, id: StreamId) -> Option<usize> {
        self.streams.get(&id).map(|s| s.loop_index)
    }

    /// A stream detached for a bridge arrives: on to its new loop, with
    /// what was held for it, then the bridge. `Some`: it could not be
    /// taken over (its call must end); a stream stopped meanwhile is
    /// dropped here, which closes its sockets.
    pub fn adopt(&mut self, moving: Box<audio_loop::MovingStream>) -> Option<StreamId> {
        let id = moving.id()?;
        let m = self.moving.remove(&id)?;
        let l = self
            .streams
            .get(&id)
            .and_then(|slot| self.loops.get_mut(slot.loop_index))?;
        if l.send(Command::Adopt(moving)).is_err() {
            return Some(id);
        }
        for cmd in m.held {
            let _ = l.send(cmd);
        }
        let _ = l.send(Command::Bridge(m.partner, id));
        None
    }

    pub fn unbridge(&mut self, a: StreamId) {
        self.command(a, Command::Unbridge(a));
    }

    fn start_on(
        &mut self,
        loop_index: usize,
        id: StreamId,
        reservation: Reservation,
        media: &Negotiated,
        source: Source,
    ) -> Result<(), MediaError> {
        let port = reservation.port;
        let Some(sockets) = reservation.take_sockets() else {
            return Err(MediaError::Busy(loop_index));
        };
        let spec = StreamSpec {
            id,
            socket: sockets.rtp,
            rtcp_socket: Some(sockets.rtcp),
            remote: media.remote_rtp,
            encoding: match media.codec {
                Codec::Pcmu => Encoding::Pcmu,
                Codec::Pcma => Encoding::Pcma,
            },
            payload_type: media.payload_type,
            // The SDP answer says 20, 40 or 60 ms; 0 or junk means 20.
            frames_per_packet: (media.ptime_ms / 20).clamp(1, 3) as u8,
            source,
            rtp_timeout: self.settings.rtp_timeout,
            telephone_event_pt: media.telephone_event_pt,
        };
        let Some(l) = self.loops.get_mut(loop_index) else {
            self.ports.release(port);
            return Err(MediaError::Busy(loop_index));
        };
        if l.send(Command::Start(Box::new(spec))).is_err() {
            self.ports.release(port);
            return Err(MediaError::Busy(loop_index));
        }
        self.streams.insert(id, StreamSlot { loop_index, port });
        Ok(())
    }

    fn command(&mut self, id: StreamId, cmd: Command) {
        // Almost always empty: skip the lookup then.
        if !self.moving.is_empty() {
            if let Some(m) = self.moving.get_mut(&id) {
                return m.held.push(cmd);
            }
        }
        if let Some(slot) = self.streams.get(&id) {
            if let Some(l) = self.loops.get_mut(slot.loop_index) {
                let _ = l.send(cmd);
            }
        }
    }

    pub fn set_source(&mut self, id: StreamId, source: Source) {
        self.command(id, Command::SetSource(id, source, 0));
    }

    /// Switch source, tagging its `SourceFinished` with `generation`.
    pub fn set_source_tagged(&mut self, id: StreamId, source: Source, generation: u32) {
        self.command(id, Command::SetSource(id, source, generation));
    }

    /// Copy the stream's audio to `tap` (a media stream's fork), or stop.
    pub fn set_tap(&mut self, id: StreamId, tap: Option<Arc<crate::media::live::StreamTap>>) {
        self.command(id, Command::Tap(id, tap));
    }

    pub fn set_remote(&mut self, id: StreamId, remote: SocketAddr) {
        self.command(id, Command::SetRemote(id, remote));
    }

    /// Send an RFC 4733 digit on the stream.
    pub fn send_dtmf(&mut self, id: StreamId, digit: char, duration_ms: u32) {
        self.command(id, Command::SendDtmf(id, digit, duration_ms));
    }

    pub fn set_sending(&mut self, id: StreamId, sending: bool) {
        self.command(id, Command::SetSending(id, sending));
    }

    /// Record the stream from the next tick on.
    pub fn record(&mut self, id: StreamId, started: crate::recording::Started) {
        self.recordings.insert(id, started.counters);
        self.command(id, Command::Record(id, started.tap));
    }

    /// Pause (silence) or resume the stream's recording.
    pub fn pause_recording(&mut self, id: StreamId, paused: bool) {
        if let Some(c) = self.recordings.get(&id) {
            c.paused.store(paused, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// The loop lets go of the tap; the writer finishes the file.
    pub fn stop_recording(&mut self, id: StreamId) {
        if self.recordings.remove(&id).is_some() {
            self.command(id, Command::StopRecording(id));
        }
    }

    pub fn stop_stream(&mut self, id: StreamId) {
        self.recordings.remove(&id);
        // Still moving: dropped when it arrives.
        self.moving.remove(&id);
        if let Some(slot) = self.streams.remove(&id) {
            if let Some(l) = self.loops.get_mut(slot.loop_index) {
                let _ = l.send(Command::Stop(id));
            }
            // The loop closes the socket when it handles Stop; a quick
            // reuse that fails to bind just moves on to the next port.
            self.ports.release(slot.port);
        }
    }

    /// RTP port pairs free to allocate.
    pub fn free_ports(&self) -> usize {
        self.ports.available()
    }

    pub fn active_streams(&self) -> usize {
        self.streams.len()
    }

    /// Each loop's smoothed load, in basis points (see `LoopStats::load`).
    pub fn loads(&self) -> Vec<u32> {
        self.loops
            .iter()
            .map(|l| l.stats.load.load(std::sync::atomic::Ordering::Relaxed))
            .collect()
    }

    pub fn stats(&self) -> Vec<Arc<audio_loop::LoopStats>> {
        self.loops.iter().map(|l| l.stats.clone()).collect()
    }

    pub fn shutdown(&mut self) {
        for l in &mut self.loops {
            l.shutdown();
        }
    }
}
