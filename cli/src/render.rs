//! `alertsync render`: the dry run Sekoia users lack. Prints exactly the request the forwarder
//! would send to one destination for one alert (a Get Alert JSON file, or a live alert fetched
//! from Sekoia), without sending it.
//!
//! The request is rendered by the forwarder's own [`alertsync_forwarder::Destination::render`],
//! so what is printed is what is sent, except that secrets are shown as `[REDACTED]`: the value
//! of every credential header (`Authorization`, `*token*`, `*key*`…), and every value the
//! config took from the environment wherever it appears (URL, other headers, body).

use std::fmt::Write as _;
use std::path::PathBuf;

use alertsync_config::{Config, REDACTED, Redactor, Stage, is_credential_header};
use alertsync_forwarder::destination::Rendered;
use alertsync_sekoia::{GetAlert, SekoiaClient};
use anyhow::{Context as _, bail};

/// Arguments of `alertsync render`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  alertsync render --config alertsync.toml --destination soar --alert tests/fixtures/alert_full.json
  alertsync render --config alertsync.toml --destination sekoia-intake \\
      --alert-uuid 3b1f6c2e-8d4a-4f0b-9e37-5a2c7d91e604

The output is the request line (method and URL with its query), the headers, a blank line and
the body. Credential header values and every value the config took from the environment are
printed as [REDACTED]. Nothing is sent to the destination.")]
pub struct RenderArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV)]
    config: PathBuf,
    /// Name of the `[[destinations]]` entry to render for.
    #[arg(long, short)]
    destination: String,
    /// A JSON file holding one alert as Sekoia's Get Alert (`GET /v1/sic/alerts/{uuid}`)
    /// returns it.
    #[arg(
        long,
        required_unless_present = "alert_uuid",
        conflicts_with = "alert_uuid"
    )]
    alert: Option<PathBuf>,
    /// Fetch this alert from Sekoia (uses `[sekoia]` of the config, needs its API key).
    #[arg(long)]
    alert_uuid: Option<String>,
    /// Which request: the creation (`created`), `[destinations.on_update]` (`updated`) or
    /// `[destinations.on_comment]` (`comment`).
    #[arg(long, value_enum, default_value = "created")]
    event: EventArg,
    /// The tool's id for the alert that `updated` and `comment` requests see as `remote.id`.
    #[arg(long, default_value = "REMOTE-ID")]
    remote_id: String,
    /// The comment text a `comment` request sees as `comment.content`.
    #[arg(long, default_value = "Sample comment from Sekoia")]
    comment: String,
}

/// `--event`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum EventArg {
    /// The creation request.
    Created,
    /// `on_update`.
    Updated,
    /// `on_comment`.
    Comment,
}

/// Renders and prints the request.
pub async fn render(args: RenderArgs) -> anyhow::Result<()> {
    // Only what the forwarder needs, plus `[sekoia]` when the alert comes from there.
    let stages: &[Stage] = if args.alert_uuid.is_some() {
        &[Stage::Forwarder, Stage::Enricher]
    } else {
        &[Stage::Forwarder]
    };
    let config = Config::load(&args.config, stages)
        .context("fix the configuration (or run `alertsync check` for every problem at once)")?;
    let Some(dcfg) = config.destination(&args.destination) else {
        let names: Vec<&str> = config
            .destinations
            .iter()
            .map(|d| d.name.as_str())
            .collect();
        bail!(
            "no destination named {:?} in {}: pass --destination with one of: {}",
            args.destination,
            args.config.display(),
            names.join(", ")
        );
    };
    let engine = alertsync_forwarder::template_engine(&config);
    let destination =
        alertsync_forwarder::Destination::new(dcfg, &engine, config.redactor.clone())?;

    let alert = match (&args.alert, &args.alert_uuid) {
        (Some(path), _) => read_alert(path)?,
        (None, Some(uuid)) => fetch_alert(&config, uuid).await?,
        (None, None) => bail!("pass --alert FILE or --alert-uuid UUID"),
    };
    let uuid = alert
        .get("uuid")
        .and_then(|u| u.as_str())
        .context("the alert has no \"uuid\" string: pass an alert as Get Alert returns it")?
        .to_string();
    if let Some(field) = trigger_filter_field(&config, &alert) {
        eprintln!(
            "note: {field} filters this alert out: the enricher would acknowledge it without \
             enriching it, and no destination would get it. The request it would otherwise \
             send:"
        );
    }
    if let Some(condition) = alertsync_forwarder::filter::Filter::new(&dcfg.filter).rejects(&alert)
    {
        eprintln!(
            "note: destinations[{}].filter.{condition} filters this alert out: the forwarder \
             would acknowledge it without sending anything. The request it would otherwise send:",
            args.destination
        );
    }
    let rendered = match args.event {
        EventArg::Created => {
            let ctx = alertsync_template::Context::new(&alert);
            destination.render(&ctx, &uuid)
        }
        EventArg::Updated | EventArg::Comment => render_later(&args, &destination, &alert, &uuid)?,
    };
    let rendered = rendered.map_err(|reason| {
        anyhow::anyhow!(
            "destination {:?} cannot render this alert: {reason} (the forwarder would \
             dead-letter it; fix the template in destinations[{}])",
            args.destination,
            args.destination
        )
    })?;
    print!("{}", format_request(&rendered, &config.redactor));
    Ok(())
}

/// The `on_update` / `on_comment` request for `alert`, with sample values for `remote` and
/// `comment` (taken from the alert's newest comment when it has one, else `--comment`).
fn render_later(
    args: &RenderArgs,
    destination: &alertsync_forwarder::Destination,
    alert: &serde_json::Value,
    uuid: &str,
) -> anyhow::Result<Result<Rendered, String>> {
    use alertsync_proto::v1;
    let (kind, template, field) = if args.event == EventArg::Updated {
        (
            v1::EventKind::Updated,
            destination.on_update.as_ref(),
            "on_update",
        )
    } else {
        (
            v1::EventKind::Comment,
            destination.on_comment.as_ref(),
            "on_comment",
        )
    };
    let Some(template) = template else {
        bail!(
            "destination {:?} has no [destinations.{field}]: it ignores {} events",
            args.destination,
            kind.label()
        );
    };
    let comment = (kind == v1::EventKind::Comment).then(|| v1::Comment {
        uuid: "00000000-0000-4000-8000-00000000c0de".into(),
        content: args.comment.clone(),
        author: "analyst".into(),
        created_by: "00000000-0000-4000-8000-000000000a11".into(),
        created_by_type: "user".into(),
        date: alert
            .get("updated_at")
            .and_then(|v| v.as_i64())
            .unwrap_or(0),
    });
    let updated = serde_json::json!({
        "status": alert.pointer("/status/uuid"),
        "status_name": alert.pointer("/status/name"),
    });
    let raw = alertsync_template::RawAlert::from_json(alert);
    let ctx = alertsync_forwarder::later::later_context(
        &raw,
        kind,
        &updated,
        comment.as_ref(),
        Some(&args.remote_id),
        None,
    );
    // The key the forwarder would send: of this alert state, or of the sample comment.
    let state = (kind == v1::EventKind::Updated)
        .then(|| alertsync_forwarder::state::of_alert(&alert.to_string()))
        .flatten();
    let key = alertsync_forwarder::later::idempotency_key(
        uuid,
        &destination.name,
        kind,
        state.as_ref(),
        comment.as_ref(),
    );
    Ok(destination.render_later(template, &ctx, &key))
}

/// The config field of the enricher's (the Alert Created trigger's) filter that would stop
/// `alert` before any destination sees it, read with the enricher's own filter.
fn trigger_filter_field(config: &Config, alert: &serde_json::Value) -> Option<&'static str> {
    use alertsync_enricher::filter::{AlertHead, TriggerFilter};
    let communities = config
        .sekoia
        .as_ref()
        .map_or(&[][..], |s| s.communities.as_slice());
    let filter = TriggerFilter::new(&config.enricher, communities);
    // The head is read leniently, as the enricher reads it: odd types count as absent.
    let head: AlertHead = serde_json::from_value(alert.clone()).unwrap_or_default();
    Some(match filter.rejects(&head)? {
        "rule_filter" => "enricher.rule_filter",
        "rule_names_filter" => "enricher.rule_names_filter",
        "community" => "sekoia.communities",
        other => other,
    })
}

/// The request as text: `METHOD URL`, one `name: value` line per header (credential values and
/// known secrets redacted), a blank line, and the body when there is one.
pub fn format_request(r: &Rendered, redactor: &Redactor) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{} {}", r.method, redactor.redact(r.url.as_str()));
    for (name, value) in &r.headers {
        // The idempotency key is ours (alert uuid and destination), not a credential.
        let value = if is_credential_header(name.as_str()) && name != "idempotency-key" {
            REDACTED.to_string()
        } else {
            redactor.redact(&String::from_utf8_lossy(value.as_bytes()))
        };
        let _ = writeln!(out, "{name}: {value}");
    }
    out.push('\n');
    if let Some(body) = &r.body {
        out.push_str(&redactor.redact(&String::from_utf8_lossy(body)));
        out.push('\n');
    }
    out
}

fn read_alert(path: &std::path::Path) -> anyhow::Result<serde_json::Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the alert file {}", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is not JSON: pass a file holding one alert as Get Alert returns it",
            path.display()
        )
    })?;
    if !value.is_object() {
        bail!(
            "{} does not hold a JSON object: pass one alert as Get Alert returns it",
            path.display()
        );
    }
    Ok(value)
}

async fn fetch_alert(config: &Config, uuid: &str) -> anyhow::Result<serde_json::Value> {
    if !is_uuid(uuid) {
        bail!("--alert-uuid {uuid:?} is not a uuid (the alert's uuid, not its short id)");
    }
    let sekoia_cfg = config
        .sekoia
        .as_ref()
        .context("--alert-uuid needs a [sekoia] section in the config")?;
    let client = SekoiaClient::new(sekoia_cfg)?;
    let redact = |s: String| config.redactor.redact(&s);
    match client.get_alert::<serde_json::Value>(uuid).await {
        GetAlert::Done((_, alert)) => Ok(alert),
        GetAlert::NotYet { .. } => bail!(
            "Sekoia has no alert {uuid} (404): check the uuid, and that the API key's community \
             can see the alert"
        ),
        GetAlert::CredentialsRejected { status, .. } => bail!(
            "Sekoia rejected the API key ({status}): set sekoia.api_key to a key with the \
             \"View alerts\" permission"
        ),
        GetAlert::Transient { reason, .. } | GetAlert::Throttled { reason, .. } => bail!(
            "cannot fetch the alert from Sekoia: {}; check sekoia.base_url and the network, \
             then try again",
            redact(reason)
        ),
        GetAlert::Permanent { reason, .. } | GetAlert::TooLarge { reason, .. } => {
            bail!("Sekoia refused Get Alert: {}", redact(reason))
        }
    }
}

fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    #[test]
    fn credential_headers_and_known_secrets_are_redacted_everywhere() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_static("Bearer abcdef123"),
        );
        headers.insert("x-tenant", HeaderValue::from_static("tenant-secret-42"));
        let r = Rendered {
            method: reqwest::Method::PUT,
            url: "https://h.example/p?t=tenant-secret-42".parse().unwrap(),
            headers,
            body: Some(r#"{"k":"tenant-secret-42"}"#.into()),
        };
        let redactor = Redactor::new(["tenant-secret-42".to_string()]);
        assert_eq!(
            format_request(&r, &redactor),
            "PUT https://h.example/p?t=[REDACTED]\n\
             authorization: [REDACTED]\n\
             x-tenant: [REDACTED]\n\
             \n\
             {\"k\":\"[REDACTED]\"}\n"
        );
    }
}
