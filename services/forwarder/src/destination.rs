//! One configured destination: its compiled templates (the creation request, `on_update`,
//! `on_comment`, `remote_id`), its HTTP client and its retry policy.
//! [`Destination::render`] builds the exact request for an alert (also the dry run of
//! `alertsync render`); [`Destination::send`] makes one attempt and maps the answer to a
//! [`CallOutcome`].
//!
//! URLs are templates too: each value rendered into one is percent-encoded
//! ([`alertsync_template::Engine::compile_url`]), and the rendered URL must keep the host
//! written in the config, so alert text cannot change where a request goes.

use alertsync_config::{Change, DestinationConfig, LaterRequest, Method, Redactor, UrlTemplate};
use alertsync_http::body::{drain, excerpt};
use alertsync_http::{CallOutcome, Class, RetryPolicy, classify, describe_error, retry_after};
use alertsync_template::{BodyTemplate, Context, Engine, TextTemplate};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

/// Longest excerpt of an error response kept in a dead-letter reason.
const RESPONSE_EXCERPT: usize = 300;
/// Largest success body read to its end so that its connection can be reused: hyper reuses a
/// connection only when the last response was read entirely, and a destination answering with
/// the created object (a few KiB) would otherwise cost a new TCP and TLS handshake per
/// delivery. The delivery has happened whatever this read does.
const DRAIN_LIMIT: usize = 64 * 1024;

/// A destination could not be set up: names the destination and the field.
#[derive(Debug, thiserror::Error)]
#[error("destinations[{name}].{field}: {reason}")]
pub struct DestinationError {
    /// Destination name.
    pub name: String,
    /// Field (json, headers.X, params.Y, url…).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

/// A rendered request, ready to send.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Method.
    pub method: reqwest::Method,
    /// URL with the rendered query parameters.
    pub url: url::Url,
    /// Headers, in send order.
    pub headers: HeaderMap,
    /// JSON body text (UTF-8; `Bytes` so that an attempt sends it without a copy).
    pub body: Option<bytes::Bytes>,
}

/// One request's compiled templates: the creation's, or `on_update` / `on_comment`.
pub struct RequestTemplate {
    method: reqwest::Method,
    /// The URL when it has no template syntax (parsed once), else its template.
    url: UrlPart,
    /// Host the rendered URL must keep (a template cannot move the request elsewhere).
    host: Option<String>,
    headers: Vec<(HeaderName, TextTemplate)>,
    params: Vec<(String, TextTemplate)>,
    body: Option<BodyTemplate>,
    /// The field prefix in error reasons (`` for the creation, `on_update.`, `on_comment.`).
    field: &'static str,
}

enum UrlPart {
    Static(url::Url),
    Template(TextTemplate),
}

/// A compiled destination.
pub struct Destination {
    /// Its name.
    pub name: String,
    create: RequestTemplate,
    /// `[destinations.on_update]`, compiled.
    pub on_update: Option<RequestTemplate>,
    /// `[destinations.on_comment]`, compiled.
    pub on_comment: Option<RequestTemplate>,
    /// `on_update.changes`: what must differ for an update to be sent (empty: any state).
    pub changes: Vec<Change>,
    /// `remote_id`, compiled.
    remote_id: Option<TextTemplate>,
    /// `[destinations.after_create]`: the comment template, the status, the author.
    after_create: Option<(Option<TextTemplate>, Option<String>, String)>,
    max_body_bytes: Option<usize>,
    client: reqwest::Client,
    /// Retry delays.
    pub retry: RetryPolicy,
    /// Attempts before dead-lettering.
    pub max_attempts: u32,
    /// Which alerts it gets.
    pub filter: crate::filter::Filter,
    redactor: Redactor,
}

/// Largest response body read for `remote_id` (the created object, as a tool answers it).
const RESPONSE_READ_LIMIT: usize = 1024 * 1024;
/// Longest remote id kept (it goes into URLs and the delivery record).
const MAX_REMOTE_ID: usize = 1024;

/// A 2xx answer, with its head and body when the destination's `remote_id` reads them.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: u16,
    /// The headers, lower-case names (only when read).
    pub headers: Vec<(String, String)>,
    /// The body (only when read, up to 1 MiB).
    pub body: Option<bytes::Bytes>,
}

/// `ctx` with the creation's answer as `response` (`status`, `headers`, `json`, `text`).
fn with_response(ctx: &Context, answer: &Answer) -> Context {
    let text = answer
        .body
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .unwrap_or_default();
    let json = serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default();
    let headers: serde_json::Map<String, serde_json::Value> = answer
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
        .collect();
    let response = serde_json::json!({
        "status": answer.status,
        "headers": headers,
        "json": json,
        "text": text,
    });
    ctx.clone().with_json("response", &response)
}

impl RequestTemplate {
    #[allow(clippy::too_many_arguments)]
    fn compile(
        engine: &Engine,
        field: &'static str,
        method: Method,
        url: &UrlTemplate,
        headers: &[(&String, &String)],
        params: &std::collections::BTreeMap<String, String>,
        json: Option<&str>,
        err: &dyn Fn(&str, String) -> DestinationError,
    ) -> Result<Self, DestinationError> {
        let body = json
            .map(|t| engine.compile_json_body(t))
            .transpose()
            .map_err(|e| err(&format!("{field}json"), e.to_string()))?;
        let mut compiled_headers = Vec::new();
        for (name, value) in headers {
            let at = format!("{field}headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(&at, "invalid header name".into()))?;
            let template = engine
                .compile_text(value)
                .map_err(|e| err(&at, e.to_string()))?;
            compiled_headers.push((header, template));
        }
        let mut compiled_params = Vec::new();
        for (name, value) in params {
            let template = engine
                .compile_text(value)
                .map_err(|e| err(&format!("{field}params.{name}"), e.to_string()))?;
            compiled_params.push((name.clone(), template));
        }
        let url_part = if url.is_template() {
            UrlPart::Template(
                engine
                    .compile_url(url.as_str())
                    .map_err(|e| err(&format!("{field}url"), e.to_string()))?,
            )
        } else {
            UrlPart::Static(
                url::Url::parse(url.as_str())
                    .map_err(|e| err(&format!("{field}url"), e.to_string()))?,
            )
        };
        Ok(Self {
            method: reqwest::Method::from_bytes(method.as_str().as_bytes())
                .unwrap_or(reqwest::Method::POST),
            url: url_part,
            host: url.host_str().map(str::to_string),
            headers: compiled_headers,
            params: compiled_params,
            body,
            field,
        })
    }

    /// Renders the request for `ctx`, with `idempotency_key` unless the templates set one.
    /// Errors are reasons for a dead-letter entry and never quote the rendered text.
    fn render(
        &self,
        ctx: &Context,
        idempotency_key: &str,
        max_body_bytes: Option<usize>,
    ) -> Result<Rendered, String> {
        let field = self.field;
        let mut url = match &self.url {
            UrlPart::Static(u) => u.clone(),
            UrlPart::Template(t) => {
                let text = t
                    .render(ctx)
                    .map_err(|e| format!("rendering {field}url failed: {e}"))?;
                let u = url::Url::parse(&text)
                    .map_err(|e| format!("{field}url rendered to an invalid URL: {e}"))?;
                if u.host_str() != self.host.as_deref() {
                    return Err(format!("{field}url rendered to another host"));
                }
                u
            }
        };
        if !self.params.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, t) in &self.params {
                let value = t
                    .render(ctx)
                    .map_err(|e| format!("rendering {field}params.{name} failed: {e}"))?;
                pairs.append_pair(name, &value);
            }
        }
        let mut headers = HeaderMap::new();
        for (name, t) in &self.headers {
            let value = t
                .render(ctx)
                .map_err(|e| format!("rendering {field}headers.{name} failed: {e}"))?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                format!("{field}headers.{name} rendered to a value that is not a valid header (control characters?)")
            })?;
            // A later request's own header replaces the destination's of the same name.
            headers.insert(name.clone(), value);
        }
        let body = match &self.body {
            None => None,
            Some(t) => {
                let text = t
                    .render(ctx)
                    .map_err(|e| format!("rendering {field}json failed: {e}"))?;
                if let Some(limit) = max_body_bytes
                    && text.len() > limit
                {
                    return Err(format!(
                        "rendered body is {} bytes, over this destination's limit of {limit} bytes",
                        text.len()
                    ));
                }
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(bytes::Bytes::from(text))
            }
        };
        let idempotency = HeaderName::from_static("idempotency-key");
        if !headers.contains_key(&idempotency) {
            // Same key on every retry and redelivery, so receivers that honour it dedupe.
            if let Ok(v) = HeaderValue::from_str(idempotency_key) {
                headers.insert(idempotency, v);
            }
        }
        Ok(Rendered {
            method: self.method.clone(),
            url,
            headers,
            body,
        })
    }
}

impl Destination {
    /// Compiles every template (a syntax error names the destination and field) and builds the
    /// HTTP client.
    pub fn new(
        cfg: &DestinationConfig,
        engine: &Engine,
        redactor: Redactor,
    ) -> Result<Self, DestinationError> {
        let err = |field: &str, reason: String| DestinationError {
            name: cfg.name.clone(),
            field: field.to_string(),
            reason,
        };
        let own: Vec<_> = cfg.headers.iter().collect();
        let create = RequestTemplate::compile(
            engine,
            "",
            cfg.method,
            &cfg.url,
            &own,
            &cfg.params,
            cfg.json.as_deref(),
            &err,
        )?;
        let later = |field: &'static str, l: &LaterRequest| {
            // The destination's headers (its credentials), then the request's own.
            let headers: Vec<_> = cfg.headers.iter().chain(l.headers.iter()).collect();
            RequestTemplate::compile(
                engine,
                field,
                l.method,
                &l.url,
                &headers,
                &l.params,
                l.json.as_deref(),
                &err,
            )
        };
        let on_update = cfg
            .on_update
            .as_ref()
            .map(|l| later("on_update.", l))
            .transpose()?;
        let on_comment = cfg
            .on_comment
            .as_ref()
            .map(|l| later("on_comment.", l))
            .transpose()?;
        let remote_id = cfg
            .remote_id
            .as_deref()
            .map(|t| engine.compile_text(t))
            .transpose()
            .map_err(|e| err("remote_id", e.to_string()))?;
        let after_create = match &cfg.after_create {
            None => None,
            Some(a) => Some((
                a.comment
                    .as_deref()
                    .map(|t| engine.compile_text(t))
                    .transpose()
                    .map_err(|e| err("after_create.comment", e.to_string()))?,
                a.status.clone().filter(|s| !s.is_empty()),
                a.author.clone(),
            )),
        };
        let client = alertsync_http::client_builder()
            .timeout(cfg.timeout.get())
            .tls_danger_accept_invalid_certs(!cfg.verify_tls)
            // A redirect could carry our credentials to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err("url", describe_error(&e)))?;
        Ok(Self {
            name: cfg.name.clone(),
            create,
            on_update,
            on_comment,
            changes: cfg
                .on_update
                .as_ref()
                .map(|u| u.changes.clone())
                .unwrap_or_default(),
            remote_id,
            after_create,
            max_body_bytes: cfg.max_body_bytes,
            client,
            retry: RetryPolicy {
                base: cfg.retry.base_delay.get(),
                max: cfg.retry.max_delay.get(),
                max_retry_after: cfg.retry.max_retry_after.get(),
            },
            max_attempts: cfg.retry.max_attempts,
            filter: crate::filter::Filter::new(&cfg.filter),
            redactor,
        })
    }

    /// Whether this destination follows alerts past their creation (`on_update`,
    /// `on_comment` or `remote_id`): then its records say how each creation ended (delivered
    /// with the remote id and the state sent, filtered, dead-lettered).
    pub fn follows_lifecycle(&self) -> bool {
        self.on_update.is_some()
            || self.on_comment.is_some()
            || self.remote_id.is_some()
            || self.after_create.is_some()
    }

    /// What `[destinations.after_create]` writes back for the alert of `ctx` once its creation
    /// got `answer`: (comment, author, status). `None` without `after_create`; `Err` when the
    /// comment cannot be rendered (the write-back then goes without it, the reason logged).
    pub fn after_create(
        &self,
        ctx: &Context,
        answer: &Answer,
    ) -> Option<(Result<String, String>, String, String)> {
        let (comment, status, author) = self.after_create.as_ref()?;
        let comment = match comment {
            None => Ok(String::new()),
            Some(t) => t
                .render(&with_response(ctx, answer))
                .map(|c| c.trim().to_string())
                .map_err(|e| format!("rendering after_create.comment failed: {e}")),
        };
        Some((comment, author.clone(), status.clone().unwrap_or_default()))
    }

    /// Whether a 2xx answer's head and body are read (for `remote_id`, `after_create`).
    pub fn reads_answers(&self) -> bool {
        self.remote_id.is_some() || self.after_create.is_some()
    }

    /// Renders the creation request for an alert. Errors are reasons for a dead-letter entry
    /// and never quote the rendered text.
    pub fn render(&self, ctx: &Context, alert_uuid: &str) -> Result<Rendered, String> {
        self.create.render(
            ctx,
            &format!("{alert_uuid}:{}", self.name),
            self.max_body_bytes,
        )
    }

    /// Renders a later request (`on_update`, `on_comment`) with its idempotency key.
    pub fn render_later(
        &self,
        template: &RequestTemplate,
        ctx: &Context,
        idempotency_key: &str,
    ) -> Result<Rendered, String> {
        template.render(ctx, idempotency_key, self.max_body_bytes)
    }

    /// The remote id `remote_id` reads from the creation's answer, for the alert of `ctx`.
    /// `Ok(None)` when there is no `remote_id`; `Err` says why it could not be read.
    pub fn remote_id(&self, ctx: &Context, answer: &Answer) -> Result<Option<String>, String> {
        let Some(t) = &self.remote_id else {
            return Ok(None);
        };
        let id = t
            .render(&with_response(ctx, answer))
            .map_err(|e| format!("rendering remote_id failed: {e}"))?;
        let id = id.trim();
        if id.is_empty() {
            return Err("remote_id rendered empty (is the id in the response?)".into());
        }
        if id.len() > MAX_REMOTE_ID {
            return Err(format!("remote_id rendered over {MAX_REMOTE_ID} bytes"));
        }
        Ok(Some(id.to_string()))
    }

    /// Makes one attempt, with the current span's trace context as `traceparent`.
    ///
    /// The outcome is the call path's ([`CallOutcome`]): `Done` carries the 2xx status; a
    /// failure's reason is redacted and quotes at most the start of the answer's body.
    pub async fn send(&self, r: &Rendered, read_answer: bool) -> CallOutcome<Answer> {
        let mut req = reqwest::Request::new(r.method.clone(), r.url.clone());
        *req.headers_mut() = r.headers.clone();
        alertsync_telemetry::propagation::inject_http(req.headers_mut());
        if let Some(body) = &r.body {
            *req.body_mut() = Some(body.clone().into());
        }
        let resp = match self.client.execute(req).await {
            Ok(resp) => resp,
            Err(e) => {
                return CallOutcome::transport(self.redactor.redact(&describe_error(&e)));
            }
        };
        let status = resp.status();
        let code = status.as_u16();
        if classify(code) == Class::Success {
            if !read_answer {
                drain(resp, DRAIN_LIMIT).await;
                return CallOutcome::Done(Answer {
                    status: code,
                    headers: Vec::new(),
                    body: None,
                });
            }
            let headers = resp
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            // The delivery happened whatever this read does: a body that cannot be read
            // leaves the remote id unknown, it does not make the delivery fail.
            let body = alertsync_http::body::read_capped(resp, RESPONSE_READ_LIMIT)
                .await
                .ok();
            return CallOutcome::Done(Answer {
                status: code,
                headers,
                body,
            });
        }
        let wait = retry_after(resp.headers());
        // Only the quoted start of the body is read, redacted whole, then cut: a 100 MiB error
        // page costs a few KiB, and a secret the cut would split is already gone.
        let excerpt = excerpt(
            resp,
            RESPONSE_EXCERPT,
            &|t| self.redactor.redact(t),
            self.redactor.longest_secret(),
        )
        .await;
        let excerpt = if excerpt.is_empty() {
            excerpt
        } else {
            format!(": {excerpt}")
        };
        let reason = self.redactor.redact(&format!(
            "destination answered {code} {}{excerpt}",
            status.canonical_reason().unwrap_or("")
        ));
        CallOutcome::of_status(code, wait, reason)
    }
}
