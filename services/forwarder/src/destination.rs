//! One configured destination: its compiled templates, its HTTP client and its retry policy.
//! [`Destination::render`] builds the exact request for an alert (also the dry run of
//! `alertsync render`); [`Destination::send`] makes one attempt and classifies the answer.

use alertsync_config::{DestinationConfig, Redactor};
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

/// A compiled destination.
pub struct Destination {
    /// Its name.
    pub name: String,
    method: reqwest::Method,
    url: url::Url,
    headers: Vec<(HeaderName, TextTemplate)>,
    params: Vec<(String, TextTemplate)>,
    body: Option<BodyTemplate>,
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
        let body = cfg
            .json
            .as_deref()
            .map(|t| engine.compile_json_body(t))
            .transpose()
            .map_err(|e| err("json", e.to_string()))?;
        let mut headers = Vec::new();
        for (name, value) in &cfg.headers {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| err(&format!("headers.{name}"), "invalid header name".into()))?;
            let template = engine
                .compile_text(value)
                .map_err(|e| err(&format!("headers.{name}"), e.to_string()))?;
            headers.push((header, template));
        }
        let mut params = Vec::new();
        for (name, value) in &cfg.params {
            let template = engine
                .compile_text(value)
                .map_err(|e| err(&format!("params.{name}"), e.to_string()))?;
            params.push((name.clone(), template));
        }
        let client = alertsync_http::client_builder()
            .timeout(cfg.timeout.get())
            .tls_danger_accept_invalid_certs(!cfg.verify_tls)
            // A redirect could carry our credentials to another host.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| err("url", describe_error(&e)))?;
        Ok(Self {
            name: cfg.name.clone(),
            method: reqwest::Method::from_bytes(cfg.method.as_str().as_bytes())
                .unwrap_or(reqwest::Method::POST),
            url: cfg.url.clone(),
            headers,
            params,
            body,
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

    /// Renders the request for `alert` (the Get Alert body). Errors are reasons for a
    /// dead-letter entry and never quote the rendered text.
    pub fn render(&self, ctx: &Context, alert_uuid: &str) -> Result<Rendered, String> {
        let mut url = self.url.clone();
        if !self.params.is_empty() {
            let mut pairs = url.query_pairs_mut();
            for (name, t) in &self.params {
                let value = t
                    .render(ctx)
                    .map_err(|e| format!("rendering params.{name} failed: {e}"))?;
                pairs.append_pair(name, &value);
            }
        }
        let mut headers = HeaderMap::new();
        for (name, t) in &self.headers {
            let value = t
                .render(ctx)
                .map_err(|e| format!("rendering headers.{name} failed: {e}"))?;
            let value = HeaderValue::from_str(&value).map_err(|_| {
                format!("headers.{name} rendered to a value that is not a valid header (control characters?)")
            })?;
            headers.append(name.clone(), value);
        }
        let body = match &self.body {
            None => None,
            Some(t) => {
                let text = t
                    .render(ctx)
                    .map_err(|e| format!("rendering json failed: {e}"))?;
                if let Some(limit) = self.max_body_bytes
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
            let key = format!("{alert_uuid}:{}", self.name);
            if let Ok(v) = HeaderValue::from_str(&key) {
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

    /// Makes one attempt, with the current span's trace context as `traceparent`.
    ///
    /// The outcome is the call path's ([`CallOutcome`]): `Done` carries the 2xx status; a
    /// failure's reason is redacted and quotes at most the start of the answer's body.
    pub async fn send(&self, r: &Rendered) -> CallOutcome<u16> {
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
            drain(resp, DRAIN_LIMIT).await;
            return CallOutcome::Done(code);
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
