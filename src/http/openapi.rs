//! The OpenAPI 3.1 document for `/v1`, written out by hand so that it says
//! what the handlers do; a test checks it names exactly the served routes.

use serde_json::{json, Value};

fn list_params(extra: &[(&str, &str)]) -> Value {
    let mut params = vec![json!({
        "name": "limit", "in": "query", "required": false,
        "description": "At most this many, newest first (1-500, default 50).",
        "schema": { "type": "integer", "minimum": 1, "maximum": 500 }
    })];
    for (name, description) in extra {
        params.push(json!({
            "name": name, "in": "query", "required": false,
            "description": description, "schema": { "type": "string" }
        }));
    }
    Value::Array(params)
}

fn path_param(name: &str) -> Value {
    json!([{ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }])
}

fn ok(description: &str, schema: Value) -> Value {
    json!({
        "200": { "description": description,
                 "content": { "application/json": { "schema": schema } } },
        "401": { "$ref": "#/components/responses/Unauthorized" },
        "403": { "$ref": "#/components/responses/Disabled" }
    })
}

fn created() -> Value {
    json!({
        "201": { "description": "Created.",
                 "content": { "application/json": { "schema": {
                     "type": "object", "properties": { "id": { "type": "string" } } } } } },
        "400": { "$ref": "#/components/responses/BadRequest" },
        "401": { "$ref": "#/components/responses/Unauthorized" },
        "403": { "$ref": "#/components/responses/Disabled" },
        "422": { "$ref": "#/components/responses/BadRequest" }
    })
}

fn list_of(key: &str, item: &str) -> Value {
    json!({ "type": "object", "properties": {
        key: { "type": "array", "items": { "$ref": format!("#/components/schemas/{item}") } } } })
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn body(schema_name: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": schema(schema_name) } } })
}

pub fn document() -> Value {
    let mut doc = routes_document();
    let (user_paths, user_schemas) = users();
    if let Some(paths) = doc["paths"].as_object_mut() {
        paths.extend(user_paths);
    }
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        schemas.extend(user_schemas);
    }
    doc
}

/// `/v1/users` (admins): its paths and schemas.
fn users() -> (
    serde_json::Map<String, Value>,
    serde_json::Map<String, Value>,
) {
    let admin = "Admin token only. `[[users]]` entries of the config are listed (`source` config) but can't be changed here (409).";
    let user = json!({ "200": { "description": "The user.",
                                "content": { "application/json": { "schema": schema("SipUser") } } },
                       "401": { "$ref": "#/components/responses/Unauthorized" },
                       "403": { "$ref": "#/components/responses/Disabled" },
                       "404": { "$ref": "#/components/responses/BadRequest" },
                       "409": { "$ref": "#/components/responses/BadRequest" },
                       "422": { "$ref": "#/components/responses/BadRequest" } });
    let update = json!({
        "summary": format!("Change a user: the fields given. A new password takes effect on the phone's next REGISTER; disabling drops its registrations on every node. {admin}"),
        "parameters": path_param("name"),
        "requestBody": body("SipUserChange"),
        "responses": user });
    let paths = json!({
        "/v1/users": {
            "get": {
                "summary": format!("The registrar's users: the config's, then the store's. {admin}"),
                "responses": ok("Users.", list_of("users", "SipUser")) },
            "post": {
                "summary": format!("Make a user that may register (digest MD5 and SHA-256). The store keeps HA1 = H(name:realm:password) per algorithm for the registrar's domain, never the password; nodes sharing the store know the user at once. 409: the registrar is off, or the name is taken. {admin}"),
                "requestBody": body("NewSipUser"),
                "responses": {
                    "201": { "description": "Created.",
                             "content": { "application/json": { "schema": schema("SipUser") } } },
                    "400": { "$ref": "#/components/responses/BadRequest" },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Disabled" },
                    "409": { "$ref": "#/components/responses/BadRequest" },
                    "422": { "$ref": "#/components/responses/BadRequest" } } } },
        "/v1/users/{name}": {
            "get": { "summary": format!("One user. {admin}"), "parameters": path_param("name"), "responses": user },
            "put": update,
            "patch": update,
            "delete": {
                "summary": format!("Delete a user and every node's registrations of it: its REGISTERs then fail. {admin}"),
                "parameters": path_param("name"),
                "responses": {
                    "204": { "description": "Deleted." },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Disabled" },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" } } } }
    });
    let tags = json!({ "type": "array", "maxItems": 32,
                       "items": { "type": "string", "minLength": 1, "maxLength": 64 },
                       "description": "Free labels (skills for queues)." });
    let password = json!({ "type": "string", "minLength": 8, "maxLength": 256, "writeOnly": true });
    let schemas = json!({
        "SipUser": { "type": "object", "properties": {
            "name": { "type": "string" }, "display_name": { "type": ["string", "null"] },
            "tags": tags, "enabled": { "type": "boolean" },
            "source": { "enum": ["config", "store"] },
            "created_at": { "type": "integer", "description": "Unix time in milliseconds (store users)." },
            "updated_at": { "type": "integer", "description": "Unix time in milliseconds (store users)." } } },
        "NewSipUser": { "type": "object", "additionalProperties": false, "required": ["name", "password"],
            "properties": {
                "name": { "type": "string", "pattern": "^[A-Za-z0-9._+-]{1,64}$" },
                "password": password, "display_name": { "type": "string", "maxLength": 128 },
                "tags": tags, "enabled": { "type": "boolean", "default": true } } },
        "SipUserChange": { "type": "object", "additionalProperties": false, "properties": {
            "password": password, "display_name": { "type": "string", "maxLength": 128 },
            "tags": tags, "enabled": { "type": "boolean" } } }
    });
    let as_map = |v: Value| match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    (as_map(paths), as_map(schemas))
}

fn routes_document() -> Value {
    let ms = json!({ "type": "integer", "description": "Unix time in milliseconds." });
    let ms_or_null =
        json!({ "type": ["integer", "null"], "description": "Unix time in milliseconds." });
    let text_or_null = json!({ "type": ["string", "null"] });
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "crossline control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Calls, chats, breakouts, leads and consents of one crossline gateway. Viewer routes (status, queues, agents) take the viewer, operator or admin bearer token; operator routes the operator or the admin token; admin routes only the admin token. A role with no token configured answers 403."
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/v1/openapi.json": { "get": {
                "summary": "This document.", "security": [],
                "responses": { "200": { "description": "The OpenAPI document." } } } },
            "/v1/status": { "get": {
                "summary": "Version, readiness, open chats, the channels a chat can move to, and the caller's role.",
                "responses": ok("Status.", json!({ "type": "object", "properties": {
                    "version": { "type": "string" }, "ready": { "type": "boolean" },
                    "role": { "enum": ["viewer", "operator", "admin"] },
                    "chats_open": { "type": "integer" },
                    "channels": { "type": "array", "items": { "enum": ["sms", "whatsapp"] } } } })) } },
            "/v1/flows": { "get": {
                "summary": "Loaded flows with their channel (voice or chat).",
                "responses": ok("Flows.", json!({ "type": "object", "properties": {
                    "flows": { "type": "array", "items": { "type": "object", "properties": {
                        "name": { "type": "string" },
                        "channel": { "enum": ["voice", "chat"] },
                        "nodes": { "type": "integer" } } } } } })) } },
            "/v1/calls": { "get": {
                "summary": "Recent call detail records.",
                "parameters": list_params(&[]),
                "responses": ok("Call records.", list_of("calls", "Call")) },
              "post": {
                "summary": "Place a call that runs a webhook app once answered, as the Twilio Calls API's POST Calls.json does: `to` is E.164 (out through the outbound trunk) or sip:user@host with the host in `[twiml] api_sip_hosts`; anything else is 400 and never dialled. Callbacks' limits apply (429).",
                "requestBody": body("NewApiCall"),
                "responses": {
                    "201": { "description": "Dialling.", "content": { "application/json": { "schema": schema("ApiCall") } } },
                    "400": { "$ref": "#/components/responses/BadRequest" },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "429": { "$ref": "#/components/responses/BadRequest" },
                    "503": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/calls/{call_id}": { "get": {
                "summary": "One call by SIP Call-ID or CallSid: its records, provider sends and breakouts.",
                "parameters": path_param("call_id"),
                "responses": ok("The call.", json!({ "type": "object", "properties": {
                    "records": { "type": "array", "items": schema("Call") },
                    "sends": { "type": "array", "items": schema("Send") },
                    "breakouts": { "type": "array", "items": schema("Breakout") } } })) },
              "post": {
                "summary": "Change a live call by CallSid: `url` or `twiml` redirects its app now (the verb playing stops), `status` completed hangs it up, canceled cancels it while it rings.",
                "parameters": path_param("call_id"),
                "requestBody": body("ApiCallChange"),
                "responses": {
                    "200": { "description": "The call now.", "content": { "application/json": { "schema": schema("ApiCall") } } },
                    "400": { "$ref": "#/components/responses/BadRequest" },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "404": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/registrations": { "get": {
                "summary": "Devices registered to the registrar (every node's with PostgreSQL), lapsed ones left out.",
                "responses": ok("Registrations.", json!({ "type": "object", "properties": {
                    "registrations": { "type": "array", "items": { "type": "object", "properties": {
                        "user": { "type": "string" },
                        "contact": { "type": "string", "description": "The Contact as the device sent it; calls go to `source`, not to its host." },
                        "source": { "type": "string", "description": "Address:port the REGISTER came from." },
                        "transport": { "enum": ["udp", "tcp", "tls"] },
                        "expires_in": { "type": "integer", "description": "Seconds left." },
                        "expires_at": ms,
                        "user_agent": { "type": ["string", "null"] },
                        "instance": { "type": ["string", "null"], "description": "RFC 5626 +sip.instance." },
                        "path": { "type": ["string", "null"], "description": "RFC 3327 Path, top first." },
                        "node": { "type": "string", "description": "The gateway that took the REGISTER." } } } } } })) } },
            "/v1/conversations": { "get": {
                "summary": "Recent conversations.",
                "parameters": list_params(&[]),
                "responses": ok("Conversations.", list_of("conversations", "Conversation")) } },
            "/v1/conversations/{id}": { "get": {
                "summary": "One conversation and its transcript.",
                "parameters": path_param("id"),
                "responses": ok("The conversation.", json!({ "type": "object", "properties": {
                    "conversation": schema("Conversation"),
                    "messages": { "type": "array", "items": schema("Message") },
                    "bindings": { "type": "array", "items": { "type": "object", "properties": {
                        "channel": { "enum": ["web", "sms", "whatsapp"] },
                        "address": { "type": ["string", "null"] },
                        "started_at": ms, "ended_at": ms_or_null } } } } })) } },
            "/v1/conversations/{id}/messages": { "post": {
                "summary": "Write into a live chat (shown as the bot's side); on a phone channel it is sent there first. 409 with `error_kind` opted_out when that number texted STOP: nothing is sent or added.",
                "parameters": path_param("id"),
                "requestBody": { "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "required": ["text"], "additionalProperties": false,
                    "properties": { "text": { "type": "string", "minLength": 1, "maxLength": 4000 } } } } } },
                "responses": {
                    "201": { "description": "Posted.", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "seq": { "type": "integer" } } } } } },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/conversations/{id}/close": { "post": {
                "summary": "Close a live chat; the visitor sees `text` (a default otherwise). A Breakout: To chat waiting on it lets its call go on at once.",
                "parameters": path_param("id"),
                "requestBody": { "required": false, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": { "text": { "type": "string", "maxLength": 4000 } } } } } },
                "responses": {
                    "200": { "description": "Closed." },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/conversations/{id}/visitor-action": { "post": {
                "summary": "The visitor action command: ask the web visitor for a phone number; their answer moves the chat to that channel.",
                "parameters": path_param("id"),
                "requestBody": body("ChannelAction"),
                "responses": {
                    "202": { "description": "Asked." },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/conversations/{id}/reconnect": { "post": {
                "summary": "Reconnect a finished conversation by SMS or WhatsApp, to its lead's phone number (PH-2A). Nothing changes if the message can't be sent; 409 while the conversation is still open or has no phone, or (`error_kind` opted_out) when the number texted STOP on that channel.",
                "parameters": path_param("id"),
                "requestBody": body("ChannelAction"),
                "responses": {
                    "200": { "description": "Reconnected; the conversation is live on the channel.",
                             "content": { "application/json": { "schema": { "type": "object",
                                 "properties": { "conversation": schema("Conversation") } } } } },
                    "409": { "$ref": "#/components/responses/BadRequest" },
                    "502": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/conversations/{id}/switch": { "post": {
                "summary": "Move a conversation that is on a phone: to the other phone channel for the same number (`sms`, `whatsapp`; the welcome goes out first, WhatsApp's as the approved template outside the 24-hour window, and the old channel is told), or `web`: text the visitor a single-use link that brings the conversation back to the web chat when opened. 409 for a conversation in the web chat (use visitor-action) or already on that channel.",
                "parameters": path_param("id"),
                "requestBody": body("ChannelAction"),
                "responses": {
                    "200": { "description": "Moved; the conversation is live on the channel.",
                             "content": { "application/json": { "schema": { "type": "object",
                                 "properties": { "conversation": schema("Conversation") } } } } },
                    "202": { "description": "The link was sent; the conversation moves when it is opened.",
                             "content": { "application/json": { "schema": { "type": "object",
                                 "properties": { "conversation": schema("Conversation") } } } } },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" },
                    "422": { "$ref": "#/components/responses/BadRequest" },
                    "429": { "$ref": "#/components/responses/BadRequest" },
                    "502": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/leads/{id}/reconnect": { "post": {
                "summary": "Reconnect with an offline lead by SMS or WhatsApp (PH-2B): a new conversation. 409 (with `conversation_id`) when the lead is already in a live conversation on that channel; 409 with `error_kind` opted_out when the number texted STOP on it.",
                "parameters": path_param("id"),
                "requestBody": body("ChannelAction"),
                "responses": {
                    "201": { "description": "Reconnected.",
                             "content": { "application/json": { "schema": { "type": "object",
                                 "properties": { "conversation": schema("Conversation") } } } } },
                    "409": { "$ref": "#/components/responses/BadRequest" },
                    "502": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/console/session": {
                "post": { "summary": "Operator console login: exchanges the operator token for an HttpOnly session cookie (SameSite=Strict), accepted by operator routes.",
                          "security": [],
                          "requestBody": { "required": true, "content": { "application/json": { "schema": {
                              "type": "object", "required": ["token"], "properties": { "token": { "type": "string" } } } } } },
                          "responses": { "204": { "description": "Logged in; Set-Cookie carries the session." },
                                         "401": { "$ref": "#/components/responses/Unauthorized" } } },
                "delete": { "summary": "Console logout.", "security": [],
                            "responses": { "204": { "description": "Logged out." } } } },
            "/v1/breakouts": { "get": {
                "summary": "Breakout: To chat sessions, newest first.",
                "parameters": list_params(&[("call_id", "Only this call's (SIP Call-ID).")]),
                "responses": ok("Breakouts.", list_of("breakouts", "Breakout")) } },
            "/v1/breakouts/{id}": { "get": {
                "summary": "One breakout session and its result.",
                "parameters": path_param("id"),
                "responses": ok("The breakout.", schema("Breakout")) } },
            "/v1/leads": {
                "get": { "summary": "Leads, most recently updated first.",
                         "parameters": list_params(&[]),
                         "responses": ok("Leads.", list_of("leads", "Lead")) },
                "post": { "summary": "Add a lead (email and/or phone, validated; phone as E.164).",
                          "requestBody": body("NewLead"), "responses": created() } },
            "/v1/consents": {
                "get": { "summary": "Consents, newest first.",
                         "parameters": list_params(&[("subject", "Only about this phone or email.")]),
                         "responses": ok("Consents.", list_of("consents", "Consent")) },
                "post": { "summary": "Record consent given or refused, with the exact text shown.",
                          "requestBody": body("NewConsent"), "responses": created() } },
            "/v1/callbacks": { "post": {
                "summary": "Call a visitor back through the outbound trunk: consent required (422 without it, and no call), the raw phone number as typed (422 `invalid_number` when it can't be one), a voice `flow` to run once answered or a SIP `target` to ring (with hold music). Rate limited per number and per API key (429).",
                "requestBody": body("NewCallback"),
                "responses": {
                    "201": { "description": "Queued; follow it by id.", "content": { "application/json": { "schema": schema("Callback") } } },
                    "422": { "$ref": "#/components/responses/BadRequest" },
                    "429": { "$ref": "#/components/responses/BadRequest" },
                    "503": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/callbacks/{id}": { "get": {
                "summary": "A callback's state: queued, ringing, answered, failed (with `sip_status`) or completed.",
                "parameters": path_param("id"),
                "responses": ok("The callback.", schema("Callback")) } },
            "/v1/reports/escalations": { "get": {
                "summary": "Every callback (escalation), newest first: by `bot` (the chat flow that asked), `flow` (or target), date range (`from`, `to`: unix ms or YYYY-MM-DD, UTC) and `outcome`; `format=csv` for a spreadsheet. Phone numbers are masked.",
                "parameters": [
                    { "name": "bot", "in": "query", "schema": { "type": "string" } },
                    { "name": "flow", "in": "query", "schema": { "type": "string" } },
                    { "name": "from", "in": "query", "schema": { "type": "string" } },
                    { "name": "to", "in": "query", "schema": { "type": "string" } },
                    { "name": "outcome", "in": "query", "schema": { "enum": ["queued", "ringing", "answered", "completed", "invalid_number", "busy", "declined", "no_answer", "failed"] } },
                    { "name": "format", "in": "query", "schema": { "enum": ["json", "csv"] } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 10000 } }
                ],
                "responses": ok("Escalations.", json!({ "type": "object", "properties": {
                    "escalations": { "type": "array", "items": schema("Callback") } } })) } },
            "/v1/trunks": { "get": {
                "summary": "Every [[trunks]] entry and its OPTIONS keep-alive state: up, down, unknown (monitored, no answer yet) or unmonitored (no options_interval_secs). Calls pass over a trunk that is down.",
                "responses": ok("Trunks, in config order.", json!({ "type": "object", "properties": {
                    "trunks": { "type": "array", "items": schema("Trunk") } } })) } },
            "/v1/queues": { "get": {
                "summary": "Every [[queues]] entry: callers waiting (in order, virtual-hold callers flagged), the longest wait, the recent average handle time, answered (and within sla_secs) and abandoned since start, and its agents.",
                "responses": ok("Queues, in config order.", json!({ "type": "object", "properties": {
                    "queues": { "type": "array", "items": schema("Queue") } } })) } },
            "/v1/agents": { "get": {
                "summary": "Every queue agent once (an agent in two queues is one agent) and its state.",
                "responses": ok("Agents.", json!({ "type": "object", "properties": {
                    "agents": { "type": "array", "items": schema("Agent") } } })) } },
            "/v1/agents/state": { "post": {
                "summary": "Pause an agent (no new calls; a call in progress goes on) or make it available again. 404: no agent with that target.",
                "requestBody": body("AgentState"),
                "responses": {
                    "200": { "description": "The agent now.", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "agent": schema("Agent") } } } } },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Disabled" },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "422": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/calls/{call_id}/recording": { "post": {
                "summary": "Start, stop, pause (PCI: silence, no DTMF, until resumed) or resume recording a live call, by SIP Call-ID. Starts at once (no announcement). 404: no such call in progress; 409: not possible now (already recording, nothing to stop, no audio yet).",
                "parameters": path_param("call_id"),
                "requestBody": body("RecordingAction"),
                "responses": {
                    "200": { "description": "The recording's state now.", "content": { "application/json": { "schema": {
                        "type": "object", "properties": { "recording": { "enum": ["recording", "paused", "stopped"] } } } } } },
                    "401": { "$ref": "#/components/responses/Unauthorized" },
                    "403": { "$ref": "#/components/responses/Disabled" },
                    "404": { "$ref": "#/components/responses/BadRequest" },
                    "409": { "$ref": "#/components/responses/BadRequest" },
                    "422": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/recordings": { "get": {
                "summary": "Finished recordings, newest first. Page with `before` = the last one's `started_at` (returned as `next_before` when there may be more).",
                "parameters": [
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500 } },
                    { "name": "call_id", "in": "query", "schema": { "type": "string" } },
                    { "name": "before", "in": "query", "schema": { "type": "integer" }, "description": "Unix ms." }
                ],
                "responses": ok("Recordings.", json!({ "type": "object", "properties": {
                    "recordings": { "type": "array", "items": schema("Recording") },
                    "next_before": ms_or_null.clone() } })) } },
            "/v1/recordings/{id}": {
                "get": {
                    "summary": "Download a recording (audio/wav or audio/ogg). One `Range: bytes=` range gives 206 with Content-Range; an unsatisfiable one 416. `x-crossline-sha256` carries the file's SHA-256.",
                    "parameters": path_param("id"),
                    "responses": {
                        "200": { "description": "The whole file." },
                        "206": { "description": "The range asked for." },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "403": { "$ref": "#/components/responses/Disabled" },
                        "404": { "$ref": "#/components/responses/BadRequest" },
                        "416": { "$ref": "#/components/responses/BadRequest" } } },
                "delete": {
                    "summary": "Delete a recording: its file (or object) and its row.",
                    "parameters": path_param("id"),
                    "responses": {
                        "204": { "description": "Deleted." },
                        "401": { "$ref": "#/components/responses/Unauthorized" },
                        "403": { "$ref": "#/components/responses/Disabled" },
                        "404": { "$ref": "#/components/responses/BadRequest" } } } },
            "/v1/admin/reload": { "post": {
                "summary": "Re-read the config file (as SIGHUP does). Admin token only.",
                "responses": { "202": { "description": "Reload requested." },
                               "401": { "$ref": "#/components/responses/Unauthorized" },
                               "403": { "$ref": "#/components/responses/Disabled" } } } }
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Unauthorized": { "description": "Missing or wrong bearer token.",
                    "content": { "application/json": { "schema": schema("Error") } } },
                "Disabled": { "description": "No token is configured for this role.",
                    "content": { "application/json": { "schema": schema("Error") } } },
                "BadRequest": { "description": "The request was refused; `error` says why.",
                    "content": { "application/json": { "schema": schema("Error") } } }
            },
            "schemas": {
                "RecordingAction": { "type": "object", "required": ["action"], "additionalProperties": false,
                    "properties": {
                        "action": { "enum": ["start", "stop", "pause", "resume"] },
                        "channels": { "enum": ["mono", "dual"], "description": "start: mixed, or the caller left and the other side right; default [recording] channels." },
                        "format": { "enum": ["wav", "ogg"], "description": "start: PCM 8 kHz WAV or Opus in Ogg; default [recording] format." } } },
                "Recording": { "type": "object", "properties": {
                    "id": { "type": "string" }, "call_id": { "type": "string" },
                    "started_at": ms.clone(), "duration_ms": { "type": "integer" },
                    "size_bytes": { "type": "integer" }, "sha256": { "type": "string" },
                    "channels": { "enum": ["mono", "dual"] }, "format": { "enum": ["wav", "ogg"] },
                    "complete": { "type": "boolean", "description": "False when audio was dropped (the disk fell behind) or the file could not be written." },
                    "url": { "type": "string" } } },
                "Error": { "type": "object", "properties": { "error": { "type": "string" },
                    "error_kind": { "type": "string", "description": "Set when a machine may act on it: opted_out (409) when the recipient texted STOP; nothing was sent." } } },
                "NewCallback": { "type": "object", "required": ["phone", "consent"], "additionalProperties": false,
                    "properties": {
                        "phone": { "type": "string", "description": "As the visitor typed it." },
                        "flow": { "type": "string" }, "target": { "type": "string", "description": "SIP URI." },
                        "consent": { "type": "object", "required": ["given", "text"], "properties": {
                            "given": { "type": "boolean" }, "text": { "type": "string" } } },
                        "context": { "type": "object", "description": "Given to the flow as context.<key> variables." },
                        "conversation_id": { "type": "string" }, "bot": { "type": "string" } } },
                "Queue": { "type": "object", "properties": {
                    "name": { "type": "string" },
                    "strategy": { "enum": ["ring_all", "longest_idle", "round_robin", "skills"] },
                    "waiting": { "type": "integer" },
                    "longest_wait_secs": { "type": "integer" },
                    "average_handle_secs": { "type": "integer", "description": "Of the last 20 calls; assumed_handle_secs before any." },
                    "answered": { "type": "integer" },
                    "answered_within_sla": { "type": "integer" },
                    "abandoned": { "type": "integer" },
                    "full": { "type": "integer", "description": "Callers turned away because max_callers were waiting." },
                    "sla_secs": { "type": "integer", "description": "Answered within this long counts in answered_within_sla." },
                    "max_callers": { "type": ["integer", "null"], "description": "Callers waiting at most; null: no limit." },
                    "agents": { "type": "array", "items": schema("Agent") },
                    "callers": { "type": "array", "items": schema("QueueCaller"), "description": "Everyone waiting, in queue order." } } },
                "QueueCaller": { "type": "object", "properties": {
                    "entry": { "type": "integer" },
                    "waited_secs": { "type": "integer" },
                    "virtual": { "type": "boolean", "description": "Virtual hold: hung up keeping their place, to be called back." },
                    "line": { "enum": ["on_line", "virtual", "calling_back", "callback_retry"] } } },
                "Agent": { "type": "object", "properties": {
                    "target": { "type": "string", "description": "A SIP URI or user:<name>." },
                    "display_name": { "type": ["string", "null"], "description": "A user:<name> agent's [[users]] display_name." },
                    "state": { "enum": ["available", "ringing", "busy", "wrap_up", "paused"] },
                    "idle_secs": { "type": ["integer", "null"], "description": "How long available; null otherwise." },
                    "state_secs": { "type": "integer", "description": "How long in the current state." },
                    "answered": { "type": "integer" },
                    "skills": { "type": "array", "items": { "type": "string" } } } },
                "AgentState": { "type": "object", "required": ["target", "state"], "properties": {
                    "target": { "type": "string" },
                    "state": { "enum": ["available", "paused"] } } },
                "Trunk": { "type": "object", "properties": {
                    "name": { "type": "string" },
                    "state": { "enum": ["up", "down", "unknown", "unmonitored"] },
                    "last_probe_at": { "type": ["integer", "null"], "description": "When the last OPTIONS ended, unix ms." },
                    "last_status": { "type": ["integer", "null"], "description": "Its final status; null after a timeout or transport error." },
                    "consecutive_failures": { "type": "integer" },
                    "groups": { "type": "array", "items": { "type": "string" }, "description": "The [[trunk_groups]] it is in." } } },
                "NewApiCall": { "type": "object", "additionalProperties": false,
                    "required": ["to", "from"], "properties": {
                    "to": { "type": "string" }, "from": { "type": "string", "description": "E.164 or a SIP user name." },
                    "url": { "type": "string" }, "twiml": { "type": "string", "description": "Instead of url: the first document (4000 characters at most)." },
                    "method": { "enum": ["GET", "POST"] }, "fallback_url": { "type": "string" },
                    "status_callback": { "type": "string" }, "status_callback_method": { "enum": ["GET", "POST"] },
                    "status_callback_event": { "type": "array", "items": { "enum": ["initiated", "ringing", "answered", "completed"] } },
                    "timeout": { "type": "integer", "description": "Seconds to ring (5-600, default 60)." } } },
                "ApiCallChange": { "type": "object", "additionalProperties": false, "properties": {
                    "url": { "type": "string" }, "twiml": { "type": "string" },
                    "method": { "enum": ["GET", "POST"] }, "status": { "enum": ["completed", "canceled"] } } },
                "ApiCall": { "type": "object", "description": "Twilio's call resource, and the SIP Call-ID.", "properties": {
                    "sid": { "type": "string" }, "call_id": { "type": "string" },
                    "account_sid": { "type": "string" }, "to": { "type": "string" }, "from": { "type": "string" },
                    "status": { "enum": ["queued", "ringing", "in-progress", "completed", "busy", "failed", "no-answer", "canceled"] },
                    "direction": { "enum": ["inbound", "outbound-api", "outbound-dial"] },
                    "date_created": { "type": "string", "description": "RFC 2822." },
                    "start_time": text_or_null, "end_time": text_or_null, "duration": text_or_null,
                    "uri": { "type": "string" } } },
                "Callback": { "type": "object", "properties": {
                    "id": { "type": "string" }, "phone": { "type": "string" },
                    "flow": text_or_null, "target": text_or_null,
                    "state": { "enum": ["queued", "ringing", "answered", "failed", "completed"] },
                    "outcome": { "type": "string" }, "sip_status": { "type": ["integer", "null"] },
                    "reason": text_or_null, "conversation_id": text_or_null, "bot": text_or_null,
                    "created_at": { "type": "integer" }, "ringing_at": { "type": ["integer", "null"] },
                    "answered_at": { "type": ["integer", "null"] }, "ended_at": { "type": ["integer", "null"] },
                    "wait_secs": { "type": ["number", "null"] }, "talk_secs": { "type": ["number", "null"] } } },
                "ChannelAction": { "type": "object", "required": ["channel"], "additionalProperties": false,
                    "properties": { "channel": { "enum": ["web", "sms", "whatsapp"], "description": "web: the switch route only." },
                                    "action": { "enum": ["ask_phone"], "description": "visitor-action only." } } },
                "Call": { "type": "object", "properties": {
                    "call_id": { "type": "string" }, "direction": { "enum": ["inbound", "outbound"] },
                    "did": { "type": "string" }, "caller": { "type": "string" },
                    "trunk": text_or_null, "flow": text_or_null,
                    "started_at": ms, "answered_at": ms_or_null, "ended_at": ms,
                    "outcome": { "type": "string" }, "sip_status": { "type": ["integer", "null"] },
                    "vars": { "type": "object", "additionalProperties": { "type": "string" },
                              "description": "Values the flow kept with the call, e.g. what a breakout returned." } } },
                "Send": { "type": "object", "properties": {
                    "channel": { "enum": ["sms", "whatsapp"] }, "provider": { "type": "string" },
                    "recipient": { "type": "string" }, "node": text_or_null,
                    "status": { "enum": ["sent", "failed", "blocked"],
                                "description": "blocked: stopped before the provider (error_kind opted_out: the recipient texted STOP)." },
                    "provider_id": text_or_null,
                    "error_kind": text_or_null, "error_code": { "type": ["integer", "null"] },
                    "segments": { "type": ["integer", "null"], "description": "SMS segments the text takes (GSM-7: 160, or 153 per part; UCS-2: 70, or 67); null for WhatsApp." },
                    "created_at": ms } },
                "Conversation": { "type": "object", "properties": {
                    "id": { "type": "string" }, "channel": { "enum": ["web", "sms", "whatsapp"] },
                    "origin": { "enum": ["breakout", "web", "sms", "whatsapp", "reconnect"] }, "flow": text_or_null,
                    "breakout_id": text_or_null, "created_at": ms, "closed_at": ms_or_null,
                    "live": { "type": "boolean" },
                    "address": { "type": ["string", "null"], "description": "The phone number it is on, masked." },
                    "lead": { "type": ["object", "null"] } } },
                "Message": { "type": "object", "properties": {
                    "seq": { "type": "integer" }, "role": { "enum": ["bot", "visitor", "system"] },
                    "kind": { "enum": ["message", "prompt", "channel", "closed"] }, "text": { "type": "string" },
                    "detail": { "description": "For prompts: input type, choices, placeholder." },
                    "at": ms } },
                "Breakout": { "type": "object", "properties": {
                    "id": { "type": "string" }, "call_id": { "type": "string" },
                    "flow": { "type": "string" }, "recipient": { "type": "string" },
                    "state": { "enum": ["pending", "opened", "returned", "timed_out",
                                        "caller_left", "returned_after_caller_left", "send_failed"] },
                    "created_at": ms, "expires_at": ms, "opened_at": ms_or_null,
                    "finished_at": ms_or_null, "conversation_id": text_or_null,
                    "result": { "type": ["object", "null"], "additionalProperties": { "type": "string" } } } },
                "Lead": { "type": "object", "properties": {
                    "id": { "type": "string" }, "name": text_or_null, "email": text_or_null,
                    "phone": text_or_null, "conversation_id": text_or_null,
                    "created_at": ms, "updated_at": ms } },
                "NewLead": { "type": "object", "additionalProperties": false, "properties": {
                    "name": { "type": "string" }, "email": { "type": "string", "format": "email" },
                    "phone": { "type": "string", "description": "With the country code; stored as E.164." },
                    "conversation_id": { "type": "string" } } },
                "Consent": { "type": "object", "properties": {
                    "id": { "type": "string" }, "subject": { "type": "string" },
                    "purpose": { "type": "string" }, "text": { "type": "string" },
                    "given": { "type": "boolean" }, "conversation_id": text_or_null,
                    "created_at": ms } },
                "NewConsent": { "type": "object", "additionalProperties": false,
                    "required": ["subject", "purpose", "text", "given"], "properties": {
                    "subject": { "type": "string" }, "purpose": { "type": "string" },
                    "text": { "type": "string", "description": "The exact wording the person saw." },
                    "given": { "type": "boolean" }, "conversation_id": { "type": "string" } } }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_exactly_the_served_routes_with_their_security() {
        let doc = document();
        let paths = doc["paths"].as_object().unwrap();
        let mut documented: Vec<(String, String)> = Vec::new();
        for (path, item) in paths {
            for method in item.as_object().unwrap().keys() {
                documented.push((method.clone(), path.clone()));
            }
        }
        documented.sort();
        let mut served: Vec<(String, String)> = super::super::api::ROUTES
            .iter()
            .map(|(m, p, _)| (m.to_string(), p.to_string()))
            .collect();
        served.sort();
        assert_eq!(documented, served);
        for (m, p, role) in super::super::api::ROUTES {
            let public = doc["paths"][p][m]["security"] == json!([]);
            assert_eq!(public, role.is_none(), "{m} {p}");
        }
        // Every $ref resolves.
        let text = doc.to_string();
        for r in text.split("\"$ref\":\"#/components/").skip(1) {
            let target = r.split('"').next().unwrap();
            let mut at = &doc["components"];
            for part in target.split('/') {
                at = &at[part];
            }
            assert!(!at.is_null(), "dangling $ref {target}");
        }
    }
}
