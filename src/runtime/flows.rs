//! File flows on the call-control side: start one interpreter task per
//! answered call, carry its requests to the endpoint and the audio loop, and
//! feed it DTMF and playback ends. Hanging up aborts the task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::Gateway;
use crate::flow::interp::{self, CallRequest, CallSignal, FlowCx, Services};
use crate::flow::Flow;
use crate::media::audio_loop::Source;
use crate::sip::endpoint::CallId;

/// A running flow instance.
pub(super) struct FlowTask {
    signals: mpsc::UnboundedSender<CallSignal>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FlowTask {
    fn drop(&mut self) {
        // Cancels whatever the flow awaited: timers, TTS, provider requests.
        self.task.abort();
    }
}

/// Build what flows share from the config.
pub(super) fn services(
    config: &crate::config::Config,
    clips: Arc<crate::media::clips::ClipCache>,
    store: Arc<dyn crate::store::Store>,
    originate: tokio::sync::mpsc::UnboundedSender<crate::callback::Originate>,
) -> anyhow::Result<Services> {
    let tts = match (
        crate::tts::build_provider(&config.tts),
        crate::tts::build_cache(&config.tts),
    ) {
        (Ok(p), Ok(c)) => Some((p, c)),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(%e, "TTS unavailable: say nodes will be skipped");
            None
        }
    };
    let providers = crate::messaging::build(&config.messaging)
        .map_err(|e| anyhow::anyhow!("[messaging]: {e}"))?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| anyhow::anyhow!("HTTP client: {e}"))?;
    let region = config
        .chat
        .default_country
        .as_deref()
        .and_then(|c| c.parse().ok());
    let chat = Arc::new(
        crate::chat::ChatHub::new(store.clone())
            .with_phone_region(region)
            .with_anonymous_caps(crate::chat::AnonymousCaps {
                total: config.chat.max_anonymous_chats.max(1),
                per_source: config.chat.max_anonymous_chats_per_source.max(1),
            })
            .with_node(
                config.store.node_id(config.http.listen),
                std::time::Duration::from_secs(config.store.lease_secs),
            ),
    );
    let policy = Arc::new(crate::messaging::policy::OutboundPolicy::new(
        config.messaging.outbound_policy(),
    ));
    {
        // Operators hear of every refusal on the console's live feed.
        let hub = chat.clone();
        policy.on_refusal(Box::new(move |text| hub.alert(text)));
    }
    let switchboard = crate::chat::Switchboard::new(
        chat.clone(),
        store.clone(),
        providers.sms.clone(),
        providers.whatsapp.clone(),
        providers.inbound.whatsapp_welcome_template.clone(),
        crate::chat::SwitchTexts {
            title: config.chat.title.clone(),
            revert_window: std::time::Duration::from_secs(config.chat.switch_revert_secs),
            sms_flow: config.chat.sms_flow.clone(),
            whatsapp_flow: config.chat.whatsapp_flow.clone(),
            whatsapp_code_template: providers.inbound.whatsapp_code_template.clone(),
        },
        policy.clone(),
    );
    let breakouts = Arc::new(crate::breakout::Breakouts::new(store.clone(), chat.clone()));
    let callbacks = Arc::new(crate::callback::Callbacks::new(
        config,
        store.clone(),
        originate,
        http.clone(),
        policy.clone(),
    ));
    Ok(Services {
        clips,
        tts,
        sms: providers.sms,
        whatsapp: providers.whatsapp,
        http,
        audio_dir: config.media.audio_dir.clone(),
        store: Some(store),
        chat,
        switchboard,
        breakouts,
        callbacks,
        webcalls: crate::webrtc::WebCalls::new(config),
        inbound: providers.inbound.clone(),
        flow_set: std::sync::RwLock::new(Arc::new(config.flow_set.clone())),
        public_base_url: config.http.public_base_url(),
        chat_texts: config.chat.clone(),
        policy,
    })
}

impl Gateway {
    /// The configured wait music with `message` (or nothing) on repeat.
    pub(super) fn hold_with(
        &self,
        message: Option<Arc<[i16]>>,
        repeat_interval: Option<std::time::Duration>,
    ) -> Arc<crate::media::audio_loop::HoldProgram> {
        Arc::new(crate::media::audio_loop::HoldProgram::new(
            self.hold.music.to_vec(),
            message,
            repeat_interval.unwrap_or(std::time::Duration::from_secs(
                self.config.media.hold_repeat_secs,
            )),
            self.config.media.hold_duck_db,
        ))
    }

    /// Start `flow` on an answered call whose stream is up.
    pub(super) fn start_flow(
        &mut self,
        call: CallId,
        flow: Arc<Flow>,
        vars: HashMap<String, String>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let cx = FlowCx::new(
            call,
            flow,
            vars,
            self.services.clone(),
            self.flow_requests.clone(),
            rx,
        );
        let task = tokio::spawn(interp::run(cx));
        self.flows.insert(call, FlowTask { signals: tx, task });
    }

    pub(super) fn flow_signal(&mut self, call: CallId, signal: CallSignal) {
        if let Some(f) = self.flows.get(&call) {
            let _ = f.signals.send(signal);
        }
    }

    /// The call is over: stop its flow.
    pub(super) fn end_flow(&mut self, call: CallId) {
        self.flows.remove(&call);
    }

    pub(super) fn flow_request(&mut self, now: Instant, call: CallId, req: CallRequest) {
        // A request queued just before the call ended is void.
        if !self.flows.contains_key(&call) {
            return;
        }
        match req {
            CallRequest::Play {
                samples,
                generation,
            } => self.play(
                call,
                Source::Clip {
                    samples,
                    looped: false,
                },
                generation,
            ),
            CallRequest::Loop {
                samples,
                generation,
            } => self.play(
                call,
                Source::Clip {
                    samples,
                    looped: true,
                },
                generation,
            ),
            CallRequest::Silence { generation } => self.play(call, Source::Silence, generation),
            CallRequest::Transfer(req) => self.start_transfer(now, call, req),
            CallRequest::Refer { target } => self.start_refer(now, call, target),
            CallRequest::Hold {
                message,
                repeat_interval,
            } => {
                // No message: the configured wait music alone.
                let hold = self.hold_with(message, repeat_interval);
                self.play(call, Source::Hold(hold), 0);
            }
            CallRequest::Keep { name, value } => {
                if let Some(r) = self.records.get_mut(&call) {
                    r.vars.insert(name, value);
                }
            }
            CallRequest::Hangup => {
                let _ = self.endpoint.hangup(now, call);
            }
        }
    }
}
