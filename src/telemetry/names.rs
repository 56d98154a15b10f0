//! Every metric crossline exports, defined once with its help text.
//! Emit sites name the constant (`counter!(names::BREAKOUTS, ...)`) and
//! `telemetry::install()` describes every entry of [`ALL`], so `/metrics`
//! carries a `# HELP` line for each. Names and labels are what dashboards
//! query: rename one only with a release note.

/// What the Prometheus exporter renders a metric as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric: its exported name, its kind and its `# HELP` text.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
}

// Lets the `metrics` macros take a `Metric` where they take a name.
impl From<Metric> for metrics::KeyName {
    fn from(metric: Metric) -> Self {
        metrics::KeyName::from_const_str(metric.name)
    }
}

const fn counter(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Counter,
        help,
    }
}

const fn gauge(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Gauge,
        help,
    }
}

const fn histogram(name: &'static str, help: &'static str) -> Metric {
    Metric {
        name,
        kind: Kind::Histogram,
        help,
    }
}

// SIP endpoint and transport (copied from their counters once a second).

pub const SIP_MESSAGES_RECEIVED: Metric = counter(
    "crossline_sip_messages_received_total",
    "SIP messages received.",
);
pub const SIP_PARSE_ERRORS: Metric = counter(
    "crossline_sip_parse_errors_total",
    "SIP datagrams or stream messages that did not parse.",
);
pub const SIP_OVERSIZE: Metric = counter(
    "crossline_sip_oversize_total",
    "SIP messages dropped for exceeding the size limit.",
);
pub const SIP_DROPPED: Metric = counter(
    "crossline_sip_dropped_total",
    "SIP requests dropped unanswered, by reason (rate_limited, scanner, banned).",
);
pub const SIP_AUTH_FAILURES: Metric = counter(
    "crossline_sip_auth_failures_total",
    "SIP digest authentications refused, by reason (wrong, user_banned).",
);
pub const SIP_BANS: Metric = counter(
    "crossline_sip_bans_total",
    "Temporary SIP bans imposed, by kind (source, user).",
);
pub const SIP_STRAY_RESPONSES: Metric = counter(
    "crossline_sip_stray_responses_total",
    "SIP responses that matched no client transaction.",
);
pub const SIP_RETRANSMISSIONS_ABSORBED: Metric = counter(
    "crossline_sip_retransmissions_absorbed_total",
    "Retransmitted SIP requests absorbed by an existing transaction.",
);
pub const SIP_RESPONSES_SENT: Metric = counter(
    "crossline_sip_responses_sent_total",
    "SIP responses sent, by status code.",
);
pub const SIP_RESPONSES_RECEIVED: Metric = counter(
    "crossline_sip_responses_received_total",
    "SIP responses received, by status code.",
);
pub const SIP_INBOUND_DROPPED: Metric = counter(
    "crossline_sip_inbound_dropped_total",
    "Inbound SIP messages dropped because the endpoint queue was full.",
);
pub const SIP_SEND_ERRORS: Metric = counter(
    "crossline_sip_send_errors_total",
    "SIP messages the transport failed to send.",
);
pub const SIP_SESSION_REFRESHES: Metric = counter(
    "crossline_sip_session_refreshes_total",
    "Session refreshes (RFC 4028 re-INVITE or UPDATE), by direction (sent, received).",
);
pub const SIP_SESSIONS_EXPIRED: Metric = counter(
    "crossline_sip_sessions_expired_total",
    "Calls hung up because their session timer ran out unrefreshed or a refresh failed.",
);
pub const SIP_SESSION_TIMER_REFUSED: Metric = counter(
    "crossline_sip_session_timer_refused_total",
    "Requests refused for their session timer, by reason (too_small: 422, malformed: 400).",
);
pub const SIP_UPDATES_RECEIVED: Metric = counter(
    "crossline_sip_updates_received_total",
    "UPDATE requests (RFC 3311) received in dialogs.",
);
pub const SIP_GLARE: Metric = counter(
    "crossline_sip_glare_total",
    "Offers refused with 491 Request Pending because one of ours was pending.",
);
pub const REFERS_RECEIVED: Metric = counter(
    "crossline_sip_refers_received_total",
    "REFERs received in calls, by outcome: accepted, forbidden (trunk without accept_refer), busy, unplaceable, malformed.",
);
pub const REFER_CALLS: Metric = counter(
    "crossline_refer_calls_total",
    "Calls placed for a REFER we accepted, by result: answered (took the old leg's place) or failed.",
);
pub const MEDIA_STREAMS: Metric = counter(
    "crossline_media_streams_total",
    "Media streams to voice agents, by how they ended: closed (by the agent), stopped (by us), failed (connect or protocol error).",
);
pub const MEDIA_STREAM_MESSAGES_REFUSED: Metric = counter(
    "crossline_media_stream_messages_refused_total",
    "Messages from voice agents that were not taken, by reason: invalid_json, unknown, bad_payload, too_long, binary, one_way.",
);
pub const MEDIA_STREAM_FRAMES_DROPPED: Metric = counter(
    "crossline_media_stream_frames_dropped_total",
    "20 ms frames dropped by media streams, by direction: to_agent (the agent read too slowly) or from_agent (it sent more than the playout buffer holds).",
);
pub const SIP_RELIABLE_PROVISIONALS: Metric = counter(
    "crossline_sip_reliable_provisionals_sent_total",
    "Reliable provisional responses (RFC 3262 100rel) sent, retransmissions not counted.",
);
pub const SIP_PRACKS: Metric = counter(
    "crossline_sip_pracks_total",
    "PRACKs, by direction (sent for reliable provisionals we got, received for ours).",
);
pub const SIP_PRACKS_REFUSED: Metric = counter(
    "crossline_sip_pracks_refused_total",
    "PRACKs answered 481: their RAck matched no reliable provisional of ours.",
);
pub const SIP_PRACK_TIMEOUTS: Metric = counter(
    "crossline_sip_prack_timeouts_total",
    "Calls refused with 500 because a reliable provisional was never PRACKed.",
);
pub const SIP_EARLY_MEDIA: Metric = counter(
    "crossline_sip_early_media_total",
    "Early media (an SDP answer in a 183 before the call is answered), by direction (sent, received).",
);
pub const TCP_CONNECTIONS: Metric = gauge(
    "crossline_tcp_connections",
    "SIP TCP and TLS connections open.",
);
pub const TCP_REJECTED: Metric = counter(
    "crossline_tcp_rejected_total",
    "SIP TCP connections refused at the global connection cap.",
);
pub const TCP_REJECTED_PER_SOURCE: Metric = counter(
    "crossline_tcp_rejected_per_source_total",
    "SIP TCP connections refused at the per-source connection cap.",
);
pub const TCP_IDLE_CLOSED: Metric = counter(
    "crossline_tcp_idle_closed_total",
    "SIP TCP connections closed for being idle.",
);
pub const TLS_HANDSHAKE_FAILURES: Metric = counter(
    "crossline_tls_handshake_failures_total",
    "SIP TLS handshakes that failed or timed out.",
);

// Calls.

pub const CALLS_STARTED: Metric = counter(
    "crossline_calls_started_total",
    "Calls started (inbound and outbound).",
);
pub const CALLS_ACTIVE: Metric = gauge("crossline_calls_active", "Calls in progress.");
pub const CALLS: Metric = counter("crossline_calls_total", "Calls ended, by outcome.");
pub const CALLS_PER_SECOND: Metric = gauge(
    "crossline_calls_per_second",
    "Calls started per second over the last export interval.",
);
pub const CALLS_REFUSED: Metric = counter(
    "crossline_calls_refused_total",
    "Calls refused, by reason (capacity, source_share, media, overload).",
);

// Where our calls go: DNS (RFC 3263) and outbound failover.

pub const DNS_LOOKUPS: Metric = counter(
    "crossline_dns_lookups_total",
    "DNS lookups for SIP destinations (cache hits included), by type (naptr, srv, address) and result (ok, empty, timeout, error).",
);
pub const DNS_FAILURES: Metric = counter(
    "crossline_dns_failures_total",
    "SIP destinations that could not be resolved, by reason (not_found, loop, timeout, no_transport, error).",
);
pub const SIP_FAILOVERS: Metric = counter(
    "crossline_sip_failovers_total",
    "Outbound requests moved to the next target, by reason (503, timeout, transport, backed_off).",
);
pub const SIP_REDIRECTS: Metric = counter(
    "crossline_sip_redirects_total",
    "3xx answers to our INVITEs, by result (followed, loop, too_many, no_contact).",
);
pub const SIP_GLOBAL_FAILURES: Metric = counter(
    "crossline_sip_global_failures_total",
    "6xx answers that ended a whole fork (every other target of the transfer or callback stopped).",
);

// RTP and the audio loops.

pub const RTP_PACKETS_SENT: Metric =
    counter("crossline_rtp_packets_sent_total", "RTP packets sent.");
pub const RTP_PACKETS_RECEIVED: Metric = counter(
    "crossline_rtp_packets_received_total",
    "RTP packets received.",
);
pub const RTP_PACKETS_LOST: Metric = counter(
    "crossline_rtp_packets_lost_total",
    "RTP packets lost, from sequence gaps.",
);
pub const RTP_JITTER_MICROSECONDS_SUM: Metric = counter(
    "crossline_rtp_jitter_microseconds_sum",
    "Sum of interarrival jitter samples in microseconds; divide by crossline_rtp_jitter_samples_total for the mean.",
);
pub const RTP_JITTER_SAMPLES: Metric = counter(
    "crossline_rtp_jitter_samples_total",
    "Interarrival jitter samples taken.",
);
pub const RTP_PACKETS_SENT_RAW: Metric = counter(
    "crossline_rtp_packets_sent_raw_total",
    "Of the RTP packets sent, those batched through an audio loop's raw socket ([media] raw_send); the rest went through each call's own socket.",
);
pub const RTP_SEND_ERRORS: Metric = counter(
    "crossline_rtp_send_errors_total",
    "RTP packets the audio loops failed to send.",
);
pub const RTP_STREAMS: Metric = gauge("crossline_rtp_streams", "RTP streams open.");
pub const RTP_PORTS_FREE: Metric = gauge(
    "crossline_rtp_ports_free",
    "RTP port pairs free to allocate.",
);
pub const AUDIO_LATE_TICKS: Metric = counter(
    "crossline_audio_late_ticks_total",
    "Audio loop ticks that started after their deadline.",
);
pub const AUDIO_BUSY_MICROSECONDS: Metric = counter(
    "crossline_audio_busy_microseconds_total",
    "Time the audio loops spent working, in microseconds.",
);
pub const AUDIO_MAX_TICK_MICROSECONDS: Metric = gauge(
    "crossline_audio_max_tick_microseconds",
    "Longest audio loop tick seen, in microseconds.",
);
pub const AUDIO_LATE_WAKEUPS: Metric = counter(
    "crossline_audio_late_wakeups_total",
    "Audio loop wake-ups over 1 ms after their deadline: the system woke the loop late (a busy or virtualised CPU), so every stream of that sub-tick went out late.",
);
pub const AUDIO_NAPS: Metric = counter(
    "crossline_audio_naps_total",
    "Naps the audio loops woke from before their deadline ([media] loop_max_sleep_us): the price of keeping their vCPUs from halting long.",
);
pub const AUDIO_MAX_WAKE_LATE_MICROSECONDS: Metric = gauge(
    "crossline_audio_max_wake_late_microseconds",
    "Latest audio loop wake-up after its deadline seen, in microseconds.",
);
pub const AUDIO_LOAD_PERCENT: Metric = gauge(
    "crossline_audio_load_percent",
    "Share of each 20 ms frame the audio loop spends working, smoothed over about a second, by loop; its headroom is the rest.",
);
pub const RUNTIME_TASKS_ALIVE: Metric = gauge(
    "crossline_runtime_tasks_alive",
    "Tasks alive on the tokio runtime: flat between load waves, or something leaks a task per call.",
);
pub const ALLOCATOR_ALLOCATED_BYTES: Metric = gauge(
    "crossline_allocator_allocated_bytes",
    "Bytes in live heap allocations (jemalloc's stats.allocated; absent when built with the system malloc).",
);
pub const ALLOCATOR_RESIDENT_BYTES: Metric = gauge(
    "crossline_allocator_resident_bytes",
    "Bytes of the allocator's pages in physical memory: live data, the gaps between it, caches, and freed pages not yet given back (jemalloc's stats.resident).",
);
pub const OVERLOADED: Metric = gauge(
    "crossline_overloaded",
    "1 while the audio loops lack headroom and new calls get 503, else 0.",
);
pub const OVERLOAD_OPTIONS_REFUSED: Metric = counter(
    "crossline_overload_options_refused_total",
    "OPTIONS answered 503 because the audio loops lacked headroom.",
);

// Runtime state.

pub const FLOWS_ACTIVE: Metric = gauge("crossline_flows_active", "Flow instances running.");
pub const DRAINING: Metric = gauge(
    "crossline_draining",
    "1 while the gateway drains (refusing new calls), else 0.",
);
pub const REGISTRATION_UP: Metric = gauge(
    "crossline_registration_up",
    "1 while registered to the registrar, else 0, by registrar.",
);
pub const TRUNK_UP: Metric = gauge(
    "crossline_trunk_up",
    "1 while an outbound trunk answers its OPTIONS keep-alive, 0 while down or not yet answered, by trunk (monitored trunks only).",
);
pub const TRUNK_OPTIONS_SENT: Metric = counter(
    "crossline_trunk_options_sent_total",
    "OPTIONS keep-alives sent to outbound trunks, by trunk.",
);
pub const TRUNK_OPTIONS_FAILED: Metric = counter(
    "crossline_trunk_options_failed_total",
    "OPTIONS keep-alives that failed, by trunk and reason (timeout, transport, 503, dns).",
);
pub const TRUNK_TRANSITIONS: Metric = counter(
    "crossline_trunk_transitions_total",
    "Outbound trunks changing state, by trunk and the state entered (up, down).",
);
pub const TRUNK_SKIPPED: Metric = counter(
    "crossline_trunk_skipped_total",
    "Calls that passed over a trunk because it was down, by trunk.",
);

// Flows and breakouts.

pub const FLOW_NODES: Metric = counter(
    "crossline_flow_nodes_total",
    "Flow nodes run, by flow and node type.",
);
pub const TWIML_DOCUMENTS: Metric = counter(
    "crossline_twiml_documents_total",
    "TwiML documents asked of webhook apps, by outcome (fetched, failed).",
);
pub const TWIML_APP_ERRORS: Metric = counter(
    "crossline_twiml_app_errors_total",
    "Webhook app errors (unreachable, timeout, http_status, too_large, bad_twiml, play_not_audio...), by kind.",
);
pub const TWIML_STATUS_CALLBACKS: Metric = counter(
    "crossline_twiml_status_callbacks_total",
    "Status callback deliveries, by outcome (sent, refused, retried, failed).",
);
pub const TWIML_API_REDIRECTS: Metric = counter(
    "crossline_twiml_api_redirects_total",
    "Running app calls redirected through the Calls API (Url or Twiml).",
);
pub const CALLS_API_REQUESTS: Metric = counter(
    "crossline_calls_api_requests_total",
    "Twilio REST API requests (Calls and Queues), by operation (create, modify, list, fetch; queue_create, queue_update, queue_delete, queue_list, queue_fetch, member_list, member_fetch, dequeue) and outcome (ok, refused, not_found, unauthorized).",
);
pub const BREAKOUTS: Metric = counter(
    "crossline_breakouts_total",
    "Breakout events (started, opened, returned, timed_out, caller_left, closed, visitor_left, send_failed).",
);
pub const BREAKOUT_LINKS_REFUSED: Metric = counter(
    "crossline_breakout_links_refused_total",
    "Breakout links refused as unknown or expired.",
);

// HTTP sidecar.

pub const HTTP_AUTH_FAILURES: Metric = counter(
    "crossline_http_auth_failures_total",
    "HTTP requests refused authentication, by reason.",
);
pub const HTTP_SIGN_IN_FAILURES: Metric = counter(
    "crossline_http_sign_in_failures_total",
    "Failed operator console sign-ins.",
);
pub const HTTP_CONNECTIONS_REFUSED: Metric = counter(
    "crossline_http_connections_refused_total",
    "HTTP connections refused, by connection cap.",
);
pub const HTTP_TLS_HANDSHAKE_FAILURES: Metric = counter(
    "crossline_http_tls_handshake_failures_total",
    "HTTPS handshakes that failed or timed out.",
);
pub const WEBHOOKS_REFUSED: Metric = counter(
    "crossline_webhooks_refused_total",
    "Inbound provider webhooks refused, by channel and reason.",
);

// Chat.

pub const CHAT_SOCKETS: Metric = gauge("crossline_chat_sockets", "Web chat WebSockets open.");
pub const CHAT_FRAMES_REFUSED: Metric = counter(
    "crossline_chat_frames_refused_total",
    "Web chat frames refused, by reason (rate, malformed).",
);
pub const CHAT_SESSIONS: Metric = counter(
    "crossline_chat_sessions_total",
    "Chat conversations started, by origin.",
);
pub const CHAT_SESSIONS_ACTIVE: Metric = gauge(
    "crossline_chat_sessions_active",
    "Chat conversations in memory.",
);
pub const CHAT_RESTORED: Metric = counter(
    "crossline_chat_restored_total",
    "Chat conversations rebuilt from the store, by how (resumed, restored).",
);
pub const CHAT_ANONYMOUS_EVICTED: Metric = counter(
    "crossline_chat_anonymous_evicted_total",
    "Anonymous web chats closed to make room for new ones.",
);
pub const CHAT_INPUTS_HANDED_OVER: Metric = counter(
    "crossline_chat_inputs_handed_over_total",
    "Chat inputs handed over from another cluster node.",
);
pub const CHAT_SWITCHES: Metric = counter(
    "crossline_chat_switches_total",
    "Chat channel switches, by target channel.",
);
pub const CHAT_SWITCH_KEYWORDS: Metric = counter(
    "crossline_chat_switch_keywords_total",
    "Channel keywords texted by visitors on a phone, by target channel and result (switched, failed).",
);
pub const CHAT_WEB_LINKS: Metric = counter(
    "crossline_chat_web_links_total",
    "Links back to the web chat, by event (sent, not_sent, claimed, refused).",
);
pub const CHAT_SWITCH_CODES: Metric = counter(
    "crossline_chat_switch_codes_total",
    "Chat switch confirmation codes entered, by result (wrong, confirmed).",
);
pub const INBOUND_MESSAGES: Metric = counter(
    "crossline_inbound_messages_total",
    "Inbound SMS and WhatsApp messages, by channel and result.",
);

// Outbound messaging.

pub const PROVIDER_SENDS: Metric = counter(
    "crossline_provider_sends_total",
    "Messages sent through providers, by channel, provider and status.",
);
pub const SENDS_BLOCKED: Metric = counter(
    "crossline_sends_blocked_total",
    "Messages stopped before reaching a provider, by channel and reason (opted_out: the recipient texted STOP).",
);
pub const OTLP_EXPORTS: Metric = counter(
    "crossline_otlp_exports_total",
    "OTLP trace export requests, by outcome (ok, failed).",
);
pub const OTLP_SPANS: Metric = counter(
    "crossline_otlp_spans_total",
    "Spans handed to the OTLP collector, by outcome (exported, failed).",
);
pub const OUTBOUND_ADMITTED: Metric = counter(
    "crossline_outbound_admitted_total",
    "Outbound messages admitted by the sending policy, by channel.",
);
pub const OUTBOUND_REFUSED: Metric = counter(
    "crossline_outbound_refused_total",
    "Outbound messages refused by the sending policy, by channel and reason.",
);
pub const WHATSAPP_OUTSIDE_WINDOW: Metric = counter(
    "crossline_whatsapp_outside_window_total",
    "Free-form WhatsApp messages held back: the person had not written in the last 24 hours.",
);

// Callbacks.

pub const CALLBACKS: Metric = counter("crossline_callbacks_total", "Callbacks requested.");
pub const CALLBACKS_REFUSED: Metric = counter(
    "crossline_callbacks_refused_total",
    "Callback requests refused, by reason (key_rate, phone_rate).",
);
pub const CALLBACKS_REDIALLED: Metric = counter(
    "crossline_callbacks_redialled_total",
    "Callbacks dialled again after a restart.",
);
pub const CALLBACK_STATES: Metric = counter(
    "crossline_callback_states_total",
    "Callback state changes, by state.",
);

// Recording.

pub const RECORDINGS_STARTED: Metric =
    counter("crossline_recordings_started_total", "Recordings started.");
pub const RECORDINGS_FINISHED: Metric = counter(
    "crossline_recordings_finished_total",
    "Recordings finished, by complete (true, false).",
);
pub const RECORDINGS_ACTIVE: Metric = gauge(
    "crossline_recordings_active",
    "Recordings the writer is writing now.",
);
pub const RECORDING_FRAMES_DROPPED: Metric = counter(
    "crossline_recording_frames_dropped_total",
    "20 ms recording frames dropped because the writer fell behind (ring full).",
);
pub const RECORDING_WRITE_ERRORS: Metric = counter(
    "crossline_recording_write_errors_total",
    "Recordings whose file could not be written (disk full, I/O error).",
);
pub const RECORDING_BYTES: Metric = counter(
    "crossline_recording_bytes_total",
    "Bytes of finished recordings written.",
);
pub const RECORDING_UPLOAD_ERRORS: Metric = counter(
    "crossline_recording_upload_errors_total",
    "Finished recordings that could not be uploaded to the bucket (kept in recordings_dir).",
);
pub const RECORDINGS_DELETED: Metric = counter(
    "crossline_recordings_deleted_total",
    "Recordings deleted, by reason (api, retention_days, max_total_mb).",
);

// Queues (ACD).

pub const QUEUE_WAITING: Metric = gauge(
    "crossline_queue_waiting",
    "Callers waiting in a queue for an agent, by queue.",
);
pub const QUEUE_LONGEST_WAIT: Metric = gauge(
    "crossline_queue_longest_wait_seconds",
    "How long the longest-waiting caller of a queue has waited, by queue.",
);
pub const QUEUE_ANSWERED: Metric = counter(
    "crossline_queue_answered_total",
    "Queued callers an agent answered, by queue.",
);
pub const QUEUE_ANSWERED_WITHIN_SLA: Metric = counter(
    "crossline_queue_answered_within_sla_total",
    "Queued callers an agent answered within the queue's sla_secs, by queue.",
);
pub const QUEUE_ABANDONED: Metric = counter(
    "crossline_queue_abandoned_total",
    "Queued callers who left before an agent answered (hung up, pressed 0, max_wait_secs), by queue.",
);
pub const QUEUE_FULL: Metric = counter(
    "crossline_queue_full_total",
    "Callers turned away because max_callers were waiting (sent to the fallback, or busy), by queue.",
);
pub const QUEUE_ANNOUNCEMENTS: Metric = counter(
    "crossline_queue_announcements_total",
    "Place-and-wait announcements to waiting callers, by queue and result (said, not_rendered).",
);
pub const QUEUE_CALLBACKS_OFFERED: Metric = counter(
    "crossline_queue_callbacks_offered_total",
    "Virtual hold: callback offers said to waiting callers (press 1), by queue.",
);
pub const QUEUE_CALLBACKS_ACCEPTED: Metric = counter(
    "crossline_queue_callbacks_accepted_total",
    "Virtual hold: callers who pressed 1 and hung up keeping their place, by queue.",
);
pub const QUEUE_CALLBACKS_PLACED: Metric = counter(
    "crossline_queue_callbacks_placed_total",
    "Virtual hold: callbacks dialled when the caller's turn came, retries included, by queue.",
);
pub const QUEUE_CALLBACKS_CONNECTED: Metric = counter(
    "crossline_queue_callbacks_connected_total",
    "Virtual hold: called-back customers bridged to an agent, by queue.",
);
pub const QUEUE_CALLBACKS_FAILED: Metric = counter(
    "crossline_queue_callbacks_failed_total",
    "Virtual hold: callbacks that weren't answered or couldn't be placed, by queue and whether the caller was dropped (out of callback_attempts).",
);

// Store.

pub const ASR_RECOGNITIONS: Metric = counter(
    "crossline_asr_recognitions_total",
    "Speech recognitions for gather, by provider and result: recognized, no_input, recognizer (failed, dropped or too slow).",
);
pub const ASR_PROVIDER_ERRORS: Metric = counter(
    "crossline_asr_provider_errors_total",
    "Recognitions the speech recognizer failed: unreachable, dropped socket, or no final transcript in time.",
);
pub const ASR_NO_MATCH: Metric = counter(
    "crossline_asr_no_match_total",
    "Recognized speech that matched none of a gather's grammar values.",
);
pub const ASR_LATENCY_SECONDS: Metric = histogram(
    "crossline_asr_latency_seconds",
    "From the end of the caller's speech (the VAD) to the final transcript.",
);
pub const ASR_SESSION_SECONDS: Metric = histogram(
    "crossline_asr_session_seconds",
    "How long each recognition ran, connect to result.",
);
pub const STORE_WRITE_SECONDS: Metric = histogram(
    "crossline_store_write_seconds",
    "Time from queueing a store write to its batch being committed, in seconds.",
);
pub const STORE_WRITE_QUEUE: Metric = gauge(
    "crossline_store_write_queue",
    "Store writes waiting in the queue.",
);
pub const STORE_WRITE_ERRORS: Metric = counter(
    "crossline_store_write_errors_total",
    "Store writes that failed.",
);
pub const STORE_CONNECT_ERRORS: Metric = counter(
    "crossline_store_connect_errors_total",
    "Failed attempts to connect to the Postgres store.",
);
pub const STORE_LISTENER_UP: Metric = gauge(
    "crossline_store_listener_up",
    "1 while this node's PostgreSQL LISTEN connection is up, else 0 (shared stores).",
);
pub const STORE_LISTENER_DROPS: Metric = counter(
    "crossline_store_listener_drops_total",
    "PostgreSQL LISTEN connections lost or refused; each is retried with backoff.",
);
pub const STORE_NOTIFICATIONS: Metric = counter(
    "crossline_store_notifications_total",
    "Notifications from other nodes received, by kind (inbox, breakout, unknown).",
);

// WebRTC.

pub const WEBRTC_CALLS: Metric = counter(
    "crossline_webrtc_calls_total",
    "WebRTC calls started from a browser.",
);
pub const WEBRTC_CALLS_ACTIVE: Metric =
    gauge("crossline_webrtc_calls_active", "WebRTC calls in progress.");
pub const WEBRTC_SHARED_HOLD_FRAMES: Metric = counter(
    "crossline_webrtc_shared_hold_frames_total",
    "Opus frames encoded by the shared hold-music encoder.",
);
pub const WEBRTC_TRANSCODE_DROPPED: Metric = counter(
    "crossline_webrtc_transcode_dropped_total",
    "Web-call frames dropped because a transcoding thread's ring was full, by direction.",
);
pub const WEBRTC_TRANSCODE_CPU: Metric = counter(
    "crossline_webrtc_transcode_cpu_microseconds_total",
    "CPU time spent by each web-call transcoding thread, in microseconds.",
);
pub const WEBRTC_TRANSCODE_JOBS: Metric = counter(
    "crossline_webrtc_transcode_jobs_total",
    "Frames transcoded by each web-call transcoding thread.",
);
pub const WEBRTC_TRANSCODE_LEGS: Metric = gauge(
    "crossline_webrtc_transcode_legs",
    "Web calls each transcoding thread holds.",
);
pub const REGISTERS: Metric = counter(
    "crossline_registers_total",
    "REGISTER requests to our registrar, by outcome (ok, challenged, forbidden, not_found, refused).",
);
pub const REGISTRATIONS_ACTIVE: Metric = gauge(
    "crossline_registrations_active",
    "Devices registered to our registrar now (bindings, every user).",
);
pub const USER_CALLS: Metric = counter(
    "crossline_user_calls_total",
    "Calls to a registered user, by outcome (rung: its devices rang; unavailable: none registered, 480).",
);
pub const USER_HANDOFFS: Metric = counter(
    "crossline_user_handoffs_total",
    "Calls for a user registered on another node, by outcome (handed: sent to that node; refused: its address is not in [registrar] cluster_nodes, or it has none) and reason.",
);
pub const STORED_USERS: Metric = gauge(
    "crossline_registrar_stored_users",
    "Registrar users from the store (/v1/users) this node knows, enabled ones.",
);

/// Every metric above; `telemetry::install()` describes each.
pub const ALL: &[Metric] = &[
    SIP_MESSAGES_RECEIVED,
    SIP_PARSE_ERRORS,
    SIP_OVERSIZE,
    SIP_DROPPED,
    SIP_AUTH_FAILURES,
    SIP_BANS,
    SIP_STRAY_RESPONSES,
    SIP_RETRANSMISSIONS_ABSORBED,
    SIP_RESPONSES_SENT,
    SIP_RESPONSES_RECEIVED,
    SIP_INBOUND_DROPPED,
    SIP_SEND_ERRORS,
    SIP_SESSION_REFRESHES,
    SIP_SESSIONS_EXPIRED,
    SIP_SESSION_TIMER_REFUSED,
    SIP_UPDATES_RECEIVED,
    SIP_GLARE,
    REFERS_RECEIVED,
    REFER_CALLS,
    ASR_RECOGNITIONS,
    ASR_PROVIDER_ERRORS,
    ASR_NO_MATCH,
    ASR_LATENCY_SECONDS,
    ASR_SESSION_SECONDS,
    MEDIA_STREAMS,
    MEDIA_STREAM_MESSAGES_REFUSED,
    MEDIA_STREAM_FRAMES_DROPPED,
    SIP_RELIABLE_PROVISIONALS,
    SIP_PRACKS,
    SIP_PRACKS_REFUSED,
    SIP_PRACK_TIMEOUTS,
    SIP_EARLY_MEDIA,
    TCP_CONNECTIONS,
    TCP_REJECTED,
    TCP_REJECTED_PER_SOURCE,
    TCP_IDLE_CLOSED,
    TLS_HANDSHAKE_FAILURES,
    CALLS_STARTED,
    CALLS_ACTIVE,
    CALLS,
    CALLS_PER_SECOND,
    CALLS_REFUSED,
    DNS_LOOKUPS,
    DNS_FAILURES,
    SIP_FAILOVERS,
    SIP_REDIRECTS,
    SIP_GLOBAL_FAILURES,
    RTP_PACKETS_SENT,
    RTP_PACKETS_RECEIVED,
    RTP_PACKETS_LOST,
    RTP_JITTER_MICROSECONDS_SUM,
    RTP_JITTER_SAMPLES,
    RTP_PACKETS_SENT_RAW,
    RTP_SEND_ERRORS,
    RTP_STREAMS,
    RTP_PORTS_FREE,
    AUDIO_LATE_TICKS,
    AUDIO_BUSY_MICROSECONDS,
    AUDIO_MAX_TICK_MICROSECONDS,
    AUDIO_LATE_WAKEUPS,
    AUDIO_NAPS,
    AUDIO_MAX_WAKE_LATE_MICROSECONDS,
    AUDIO_LOAD_PERCENT,
    RUNTIME_TASKS_ALIVE,
    ALLOCATOR_ALLOCATED_BYTES,
    ALLOCATOR_RESIDENT_BYTES,
    OVERLOADED,
    OVERLOAD_OPTIONS_REFUSED,
    FLOWS_ACTIVE,
    DRAINING,
    REGISTRATION_UP,
    TRUNK_UP,
    TRUNK_OPTIONS_SENT,
    TRUNK_OPTIONS_FAILED,
    TRUNK_TRANSITIONS,
    TRUNK_SKIPPED,
    FLOW_NODES,
    TWIML_DOCUMENTS,
    TWIML_APP_ERRORS,
    TWIML_STATUS_CALLBACKS,
    TWIML_API_REDIRECTS,
    CALLS_API_REQUESTS,
    BREAKOUTS,
    BREAKOUT_LINKS_REFUSED,
    HTTP_AUTH_FAILURES,
    HTTP_SIGN_IN_FAILURES,
    HTTP_CONNECTIONS_REFUSED,
    HTTP_TLS_HANDSHAKE_FAILURES,
    WEBHOOKS_REFUSED,
    CHAT_SOCKETS,
    CHAT_FRAMES_REFUSED,
    CHAT_SESSIONS,
    CHAT_SESSIONS_ACTIVE,
    CHAT_RESTORED,
    CHAT_ANONYMOUS_EVICTED,
    CHAT_INPUTS_HANDED_OVER,
    CHAT_SWITCHES,
    CHAT_SWITCH_CODES,
    CHAT_SWITCH_KEYWORDS,
    CHAT_WEB_LINKS,
    INBOUND_MESSAGES,
    PROVIDER_SENDS,
    SENDS_BLOCKED,
    OTLP_EXPORTS,
    OTLP_SPANS,
    OUTBOUND_ADMITTED,
    OUTBOUND_REFUSED,
    WHATSAPP_OUTSIDE_WINDOW,
    CALLBACKS,
    CALLBACKS_REFUSED,
    CALLBACKS_REDIALLED,
    CALLBACK_STATES,
    RECORDINGS_STARTED,
    RECORDINGS_FINISHED,
    RECORDINGS_ACTIVE,
    RECORDING_FRAMES_DROPPED,
    RECORDING_WRITE_ERRORS,
    RECORDING_BYTES,
    RECORDING_UPLOAD_ERRORS,
    RECORDINGS_DELETED,
    QUEUE_WAITING,
    QUEUE_LONGEST_WAIT,
    QUEUE_ANSWERED,
    QUEUE_ANSWERED_WITHIN_SLA,
    QUEUE_ABANDONED,
    QUEUE_FULL,
    QUEUE_ANNOUNCEMENTS,
    QUEUE_CALLBACKS_OFFERED,
    QUEUE_CALLBACKS_ACCEPTED,
    QUEUE_CALLBACKS_PLACED,
    QUEUE_CALLBACKS_CONNECTED,
    QUEUE_CALLBACKS_FAILED,
    STORE_WRITE_SECONDS,
    STORE_WRITE_QUEUE,
    STORE_WRITE_ERRORS,
    STORE_CONNECT_ERRORS,
    STORE_LISTENER_UP,
    STORE_LISTENER_DROPS,
    STORE_NOTIFICATIONS,
    WEBRTC_CALLS,
    WEBRTC_CALLS_ACTIVE,
    WEBRTC_SHARED_HOLD_FRAMES,
    WEBRTC_TRANSCODE_DROPPED,
    WEBRTC_TRANSCODE_CPU,
    WEBRTC_TRANSCODE_JOBS,
    WEBRTC_TRANSCODE_LEGS,
    REGISTERS,
    REGISTRATIONS_ACTIVE,
    USER_CALLS,
    USER_HANDOFFS,
    STORED_USERS,
];

#[cfg(test)]
mod tests {
    use super::*;

    // The one counter that keeps Prometheus' `_sum` suffix: it pairs with
    // crossline_rtp_jitter_samples_total to give the mean, and dashboards
    // already query it by this name.
    const COUNTERS_NOT_ENDING_IN_TOTAL: &[&str] = &["crossline_rtp_jitter_microseconds_sum"];

    #[test]
    fn names_are_unique_well_formed_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for m in ALL {
            assert!(seen.insert(m.name), "{} is listed twice", m.name);
            let rest = m.name.strip_prefix("crossline_");
            assert!(
                rest.is_some_and(|r| !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')),
                "{} is not crossline_[a-z0-9_]+",
                m.name
            );
            match m.kind {
                Kind::Counter => assert!(
                    m.name.ends_with("_total") || COUNTERS_NOT_ENDING_IN_TOTAL.contains(&m.name),
                    "counter {} should end in _total",
                    m.name
                ),
                Kind::Gauge | Kind::Histogram => assert!(
                    !m.name.ends_with("_total"),
                    "{} is not a counter but ends in _total",
                    m.name
                ),
            }
            assert!(!m.help.trim().is_empty(), "{} has no help text", m.name);
        }
    }

    /// A metric defined above but left out of `ALL` would go undescribed.
    #[test]
    fn every_defined_metric_is_in_the_table() {
        let source = include_str!("names.rs");
        let defined = source.matches(concat!(": Metric ", "=")).count();
        assert_eq!(
            defined,
            ALL.len(),
            "a `pub const ...: Metric` is missing from ALL"
        );
    }
}
