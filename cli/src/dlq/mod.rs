//! `alertsync dlq`: the dead-letter queue as an operator works with it.
//!
//! - `list [--destination D] [--json]`: one line (or JSON object) per entry;
//! - `show <seq>`: the entry, and the request its destination would get for it now (rendered
//!   by the forwarder's own code with the current config; secrets redacted);
//! - `replay (<seq>... | --all) [--destination D]`: republish to the stage that failed, with
//!   fresh attempts (a `forward` entry goes to its destination only), then delete the entry;
//! - `purge [--older-than DUR]`.
//!
//! Only `[nats]` of the config is needed (and `[[destinations]]` to render in `show`). The
//! operations themselves (reading, replaying, purging the stream) live in [`ops`].

pub mod ops;

use std::path::PathBuf;
use std::time::SystemTime;

use alertsync_config::{Config, Stage};
use alertsync_nats::Subjects;
use alertsync_proto::{Message as _, v1};
use anyhow::{Context as _, bail};
use ops::{Dlq, Entry};

/// Arguments of `alertsync dlq`.
#[derive(clap::Args)]
#[command(after_help = "Examples:
  alertsync dlq --config alertsync.toml list
  alertsync dlq --config alertsync.toml list --destination soar --json
  alertsync dlq --config alertsync.toml show 42
  alertsync dlq --config alertsync.toml replay 42 43
  alertsync dlq --config alertsync.toml replay --all --destination soar
  alertsync dlq --config alertsync.toml purge --older-than 30d

Only the [nats] section of the config is used (plus [[destinations]] by `show`).")]
pub struct DlqArgs {
    /// Path of alertsync.toml.
    #[arg(long, short, env = alertsync_config::CONFIG_ENV, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: DlqCommand,
}

#[derive(clap::Subcommand)]
enum DlqCommand {
    /// One line per entry: sequence, time, stage, destination, alert uuid, last status,
    /// attempts, reason.
    List {
        /// Only the entries of this destination.
        #[arg(long, short)]
        destination: Option<String>,
        /// One JSON object per line instead of columns.
        #[arg(long)]
        json: bool,
    },
    /// An entry in full, with the request its destination would get for it now.
    Show {
        /// Sequence of the entry (the first column of `list`).
        sequence: u64,
    },
    /// Republish entries to the stage that failed, with fresh attempts, then delete them.
    Replay {
        /// Sequences of the entries.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        sequences: Vec<u64>,
        /// Every entry (of `--destination`, when given).
        #[arg(long)]
        all: bool,
        /// Only entries of this destination (with sequences: refuse others).
        #[arg(long, short)]
        destination: Option<String>,
    },
    /// Delete entries: all of them, or those older than a duration.
    Purge {
        /// Only entries stored longer ago than this ("7d", "12h").
        #[arg(long, value_parser = humantime::parse_duration)]
        older_than: Option<std::time::Duration>,
    },
}

/// Runs `alertsync dlq`.
pub async fn dlq(args: DlqArgs) -> anyhow::Result<()> {
    let Some(path) = args.config.clone() else {
        bail!("pass --config alertsync.toml (or set ALERTSYNC_CONFIG)");
    };
    let config = load(&path, &[])?;
    let (_client, js) = alertsync_nats::connect(&config.nats, "alertsync-dlq")
        .await
        .context("is nats.url right, and is the server up?")?;
    let dlq = Dlq::new(js, Subjects::new(&config.nats.prefix));
    match args.command {
        DlqCommand::List { destination, json } => {
            let listing = dlq.list(destination.as_deref()).await?;
            let entries = listing.entries;
            if !json {
                println!(
                    "{:>8}  {:<20}  {:<7}  {:<16}  {:<36}  {:>6}  {:>8}  REASON",
                    "SEQ", "TIME", "STAGE", "DESTINATION", "ALERT", "STATUS", "ATTEMPTS"
                );
            }
            for e in &entries {
                if json {
                    println!("{}", entry_json(e, &config));
                } else {
                    println!("{}", entry_line(e, &config));
                }
            }
            for u in &listing.undecodable {
                if json {
                    let v = serde_json::json!({
                        "sequence": u.sequence,
                        "subject": u.subject,
                        "stored_at": time_text(u.stored_at),
                        "undecodable": u.reason,
                    });
                    println!("{v}");
                } else {
                    println!(
                        "{:>8}  {:<20}  UNDECODABLE ({}): {}",
                        u.sequence,
                        time_text(u.stored_at),
                        u.subject,
                        u.reason
                    );
                }
            }
            if !json {
                eprintln!(
                    "{} entries{}",
                    entries.len(),
                    match listing.undecodable.len() {
                        0 => String::new(),
                        n => format!(", {n} undecodable (not a dead letter; never replayed)"),
                    }
                );
            }
        }
        DlqCommand::Show { sequence } => {
            let entry = dlq.get(sequence).await?;
            // Rendering needs the destinations (and their secrets); without them, show the rest.
            let full = load(&path, &[Stage::Forwarder]);
            print!("{}", show(&entry, &config, full));
        }
        DlqCommand::Replay {
            sequences,
            all,
            destination,
        } => replay(&dlq, sequences, all, destination.as_deref()).await?,
        DlqCommand::Purge { older_than } => {
            let purged = dlq.purge(older_than).await?;
            println!("purged {purged} entries");
        }
    }
    Ok(())
}

fn load(path: &std::path::Path, stages: &[Stage]) -> anyhow::Result<Config> {
    let config = Config::load(path, stages)?;
    // With no stage given, unset variables are not reported by the loader; [nats] needs its.
    let n = &config.nats;
    let unresolved = [
        ("nats.url", Some(n.url.as_str())),
        ("nats.user", n.user.as_deref()),
        ("nats.password", n.password.as_ref().map(|s| s.expose())),
        ("nats.token", n.token.as_ref().map(|s| s.expose())),
    ]
    .into_iter()
    .find(|(_, v)| v.is_some_and(|v| v.contains("${")));
    if let Some((field, _)) = unresolved {
        bail!("{field}: references an environment variable that is not set");
    }
    Ok(config)
}

fn time_text(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn status_text(s: u32) -> String {
    if s == 0 { "-".into() } else { s.to_string() }
}

fn entry_line(e: &Entry, config: &Config) -> String {
    let l = &e.letter;
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    format!(
        "{:>8}  {:<20}  {:<7}  {:<16}  {:<36}  {:>6}  {:>8}  {}",
        e.sequence,
        time_text(e.stored_at),
        l.stage,
        or_dash(&l.destination),
        or_dash(&l.alert_uuid),
        status_text(l.last_http_status),
        l.attempts,
        config.redactor.redact(&l.reason).replace(['\n', '\r'], " ")
    )
}

fn entry_json(e: &Entry, config: &Config) -> serde_json::Value {
    let l = &e.letter;
    serde_json::json!({
        "sequence": e.sequence,
        "time": time_text(e.stored_at),
        "stage": l.stage,
        "destination": l.destination,
        "alert_uuid": l.alert_uuid,
        "reason": config.redactor.redact(&l.reason),
        "attempts": l.attempts,
        "last_status": if l.last_http_status == 0 { None } else { Some(l.last_http_status) },
        "original_subject": l.original_subject,
        "original_sequence": l.original_sequence,
    })
}

fn show(e: &Entry, config: &Config, full: anyhow::Result<Config>) -> String {
    use std::fmt::Write as _;
    let l = &e.letter;
    let r = &config.redactor;
    let ts = |t: &Option<alertsync_proto::Timestamp>| {
        t.as_ref()
            .map(|t| time_text(alertsync_proto::time::to_system(t)))
            .unwrap_or_else(|| "-".into())
    };
    let mut out = String::new();
    let _ = writeln!(out, "sequence:          {}", e.sequence);
    let _ = writeln!(out, "stored:            {}", time_text(e.stored_at));
    let _ = writeln!(out, "dead-letter subject: {}", e.subject);
    let _ = writeln!(out, "stage:             {}", l.stage);
    if !l.destination.is_empty() {
        let _ = writeln!(out, "destination:       {}", l.destination);
    }
    let _ = writeln!(out, "alert:             {}", l.alert_uuid);
    let _ = writeln!(out, "reason:            {}", r.redact(&l.reason));
    let _ = writeln!(
        out,
        "last status:       {}",
        status_text(l.last_http_status)
    );
    let _ = writeln!(out, "attempts:          {}", l.attempts);
    let _ = writeln!(out, "first attempt:     {}", ts(&l.first_attempt_at));
    let _ = writeln!(out, "last attempt:      {}", ts(&l.last_attempt_at));
    let _ = writeln!(
        out,
        "original:          {} (sequence {})",
        l.original_subject, l.original_sequence
    );
    let _ = writeln!(out, "payload:           {} bytes", l.original_payload.len());
    out.push('\n');
    match alertsync_proto::Stage::from_token(&l.stage) {
        Some(alertsync_proto::Stage::Forward) => out.push_str(&forward_request(l, full)),
        Some(alertsync_proto::Stage::Enrich) => {
            match v1::AlertNotification::decode(l.original_payload.as_slice()) {
                Ok(c) => {
                    let _ = writeln!(
                        out,
                        "AlertNotification: alert {} (short id {:?}, community {:?}, source {:?})",
                        c.alert_uuid,
                        c.short_id,
                        c.community_uuid,
                        c.source()
                    );
                    let _ = writeln!(
                        out,
                        "Replay publishes it again for the enricher (Get Alert {}).",
                        c.alert_uuid
                    );
                }
                Err(err) => {
                    let _ = writeln!(out, "The payload is not an AlertNotification ({err}).");
                    let _ = writeln!(out, "{}", preview(&l.original_payload));
                }
            }
        }
        _ => {}
    }
    out
}

fn forward_request(l: &v1::DeadLetter, full: anyhow::Result<Config>) -> String {
    let config = match full {
        Ok(c) => c,
        Err(e) => {
            return format!(
                "Request not rendered: the config's destinations cannot be loaded here: {e:#}\n"
            );
        }
    };
    let enriched = match v1::EnrichedAlert::decode(l.original_payload.as_slice()) {
        Ok(m) => m,
        Err(e) => {
            return format!(
                "The payload is not an EnrichedAlert ({e}): nothing to render.\n{}\n",
                preview(&l.original_payload)
            );
        }
    };
    let Some(dcfg) = config.destination(&l.destination) else {
        return format!(
            "Request not rendered: destination {:?} is no longer in the config.\n",
            l.destination
        );
    };
    let engine = alertsync_forwarder::template_engine(&config);
    let dest = match alertsync_forwarder::Destination::new(dcfg, &engine, config.redactor.clone()) {
        Ok(d) => d,
        Err(e) => {
            return format!(
                "Request not rendered: {}\n",
                config.redactor.redact(&e.to_string())
            );
        }
    };
    let alert: serde_json::Value = match serde_json::from_slice(&enriched.alert_json) {
        Ok(v) => v,
        Err(e) => return format!("Request not rendered: the alert body is not JSON ({e}).\n"),
    };
    let uuid = enriched
        .created
        .as_ref()
        .map(|c| c.alert_uuid.clone())
        .unwrap_or_default();
    let ctx = alertsync_template::Context::new(&alert);
    match dest.render(&ctx, &uuid) {
        Ok(req) => format!(
            "Request {} would get now (secrets redacted):\n\n{}",
            l.destination,
            crate::render::format_request(&req, &config.redactor)
        ),
        Err(reason) => format!(
            "Request not rendered: {}\n",
            config.redactor.redact(&reason)
        ),
    }
}

/// The first bytes of an undecodable payload, escaped.
fn preview(payload: &[u8]) -> String {
    let head = &payload[..payload.len().min(200)];
    format!("payload starts: {}", head.escape_ascii())
}

async fn replay(
    dlq: &Dlq,
    sequences: Vec<u64>,
    all: bool,
    destination: Option<&str>,
) -> anyhow::Result<()> {
    let entries = if all {
        let listing = dlq.list(destination).await?;
        if !listing.undecodable.is_empty() {
            eprintln!(
                "{} undecodable entries left in place (see `alertsync dlq list`)",
                listing.undecodable.len()
            );
        }
        listing.entries
    } else {
        let mut v = Vec::new();
        for seq in sequences {
            let e = dlq.get(seq).await?;
            if let Some(d) = destination
                && e.letter.destination != d
            {
                bail!(
                    "entry {seq} is for destination {:?}, not {d:?}: nothing was replayed",
                    e.letter.destination
                );
            }
            v.push(e);
        }
        v
    };
    let mut failed = 0;
    for e in &entries {
        match dlq.replay(e).await {
            Ok(r) => println!(
                "replayed {} ({} {}) to {} as sequence {}",
                r.sequence,
                e.letter.stage,
                if e.letter.alert_uuid.is_empty() {
                    "poison"
                } else {
                    &e.letter.alert_uuid
                },
                r.subject,
                r.new_sequence
            ),
            Err(err) => {
                failed += 1;
                eprintln!("error: {err}");
            }
        }
    }
    println!("{} replayed, {failed} failed", entries.len() - failed);
    if failed > 0 {
        bail!("{failed} entries were not replayed (they are still in the DLQ)");
    }
    Ok(())
}
