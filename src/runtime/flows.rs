//! File flows on the driver's side: one interpreter task per answered
//! call, whose handle call control keeps with the call. Dropping the handle
//! (the call ended) aborts the task.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::Instrument;

use crate::flow::interp::{self, CallRequest, CallSignal, FlowCx, Services};
use crate::sip::endpoint::CallId;

/// A running flow instance.
pub(super) struct FlowTask {
    pub(super) call: CallId,
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
    recordings: Arc<crate::recording::Recordings>,
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
    // Every send goes through the opt-out list: STOP blocks them all.
    let opt_outs = crate::messaging::opt_out::OptOuts::new(store.clone());
    let providers = crate::messaging::build(&config.messaging)
        .map_err(|e| anyhow::anyhow!("[messaging]: {e}"))?
        .gated(&opt_outs);
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
    // Flows and the switchboard share one window and one gated provider.
    let window = crate::messaging::window::WhatsAppWindow::new(store.clone());
    let whatsapp = providers.whatsapp.map(|p| window.gate(p));
    let switchboard = crate::chat::Switchboard::new(
        chat.clone(),
        store.clone(),
        providers.sms.clone(),
        whatsapp.clone(),
        window,
        crate::chat::SwitchTexts {
            title: config.chat.title.clone(),
            revert_window: std::time::Duration::from_secs(config.chat.switch_revert_secs),
            sms_flow: config.chat.sms_flow.clone(),
            whatsapp_flow: config.chat.whatsapp_flow.clone(),
            whatsapp_code_template: providers.inbound.whatsapp_code_template.clone(),
            keywords: crate::chat::SwitchKeywords::new(
                config.chat.switch_keywords.iter().filter_map(|(word, to)| {
                    Some((word.clone(), crate::chat::ChannelKind::parse(to)?))
                }),
            ),
            web_link_ttl: std::time::Duration::from_secs(config.chat.web_link_ttl_secs),
            link_base: config
                .http
                .public_base_url()
                .trim_end_matches('/')
                .to_string(),
            whatsapp_welcome_template: providers.inbound.whatsapp_welcome_template.clone(),
        },
        policy.clone(),
        opt_outs,
    );
    let breakouts = Arc::new(
        crate::breakout::Breakouts::new(store.clone(), chat.clone()).with_left_rule(
            crate::breakout::LeftRule {
                grace: std::time::Duration::from_secs(config.chat.breakout_left_secs),
                message: config.chat.breakout_left_message.clone(),
            },
        ),
    );
    let callbacks = Arc::new(crate::callback::Callbacks::new(
        config,
        store.clone(),
        originate,
        http.clone(),
        policy.clone(),
    ));
    let queues = crate::queue::Queues::new(
        &config.queues,
        &config.users,
        Some(crate::queue::VirtualHold {
            callbacks: callbacks.clone(),
            store: store.clone(),
            node: config.store.node_id(config.http.listen),
        }),
    );
    Ok(Services {
        clips,
        tts,
        sms: providers.sms,
        whatsapp,
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
        asr: config
            .asr
            .recognizer()
            .map_err(|e| anyhow::anyhow!("[asr]: {e}"))?,
        media_streams: config
            .media_streams
            .settings(&config.twiml)
            .map_err(|e| anyhow::anyhow!("[media_streams]: {e}"))?,
        recordings,
        twiml: Arc::new(
            crate::twiml::Apps::new(config).map_err(|e| anyhow::anyhow!("[twiml]: {e}"))?,
        ),
        queues,
    })
}

/// Start the flow of `start` on its own task.
pub(super) fn start(
    start: crate::call::FlowStart,
    services: Arc<Services>,
    requests: mpsc::UnboundedSender<(CallId, CallRequest)>,
) -> FlowTask {
    let (tx, rx) = mpsc::unbounded_channel();
    let cx = FlowCx::new(
        start.call,
        start.flow,
        start.vars,
        services,
        requests,
        rx,
        start.answered,
    );
    // In the call's span: every line the flow logs names its call.
    let task = tokio::spawn(interp::run(cx).instrument(start.span));
    FlowTask {
        call: start.call,
        signals: tx,
        task,
    }
}

impl FlowTask {
    pub(super) fn signal(&self, signal: CallSignal) {
        let _ = self.signals.send(signal);
    }
}
