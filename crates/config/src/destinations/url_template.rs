//! [`UrlTemplate`]: a destination URL that may hold template expressions
//! (`https://soar.example/api/alerts/{{ remote.id }}`).

use serde::Deserialize;

/// A URL template, checked at load: with every `{{ … }}` / `{% … %}` replaced by a plain
/// placeholder it must be an absolute URL, so the scheme and host are known (and cannot come
/// from alert text: a value rendered into the URL is percent-encoded).
#[derive(Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    text: String,
    probe: url::Url,
}

impl UrlTemplate {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let probe =
            url::Url::parse(&placeholders(text)).map_err(|e| format!("invalid URL: {e}"))?;
        if probe.host_str().is_none_or(|h| h.contains("x0x")) {
            return Err("the host must be written out, not a template".into());
        }
        Ok(Self {
            text: text.to_string(),
            probe,
        })
    }

    /// The template text, as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The scheme (`http`, `https`).
    pub fn scheme(&self) -> &str {
        self.probe.scheme()
    }

    /// The host.
    pub fn host_str(&self) -> Option<&str> {
        self.probe.host_str()
    }

    /// The port, when written.
    pub fn port(&self) -> Option<u16> {
        self.probe.port()
    }

    /// A URL to try the destination with (`alertsync check`): the URL itself, or its origin
    /// when it holds template syntax.
    pub fn reachability_url(&self) -> url::Url {
        let mut u = self.probe.clone();
        if self.is_template() {
            u.set_path("/");
            u.set_query(None);
        }
        u
    }

    /// Whether the URL holds template syntax.
    pub fn is_template(&self) -> bool {
        self.text.contains("{{") || self.text.contains("{%")
    }
}

/// `text` with each template expression or statement replaced by `x0x`.
fn placeholders(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let next = ["{{", "{%"]
            .iter()
            .filter_map(|open| rest.find(open).map(|i| (i, *open)))
            .min();
        let Some((i, open)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..i]);
        let close = if open == "{{" { "}}" } else { "%}" };
        match rest[i + 2..].find(close) {
            Some(j) => {
                if open == "{{" {
                    out.push_str("x0x");
                }
                rest = &rest[i + 2 + j + 2..];
            }
            None => {
                out.push_str(&rest[i..]);
                return out;
            }
        }
    }
}

impl std::fmt::Debug for UrlTemplate {
    // The path and query may hold a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UrlTemplate")
            .field("host", &self.probe.host_str())
            .finish_non_exhaustive()
    }
}

impl<'de> Deserialize<'de> for UrlTemplate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        UrlTemplate::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_in_the_path_and_query_are_fine_in_the_host_not() {
        let u =
            UrlTemplate::parse("https://soar.example:8443/api/alerts/{{ remote.id }}?x={{ a }}")
                .unwrap();
        assert_eq!(u.host_str(), Some("soar.example"));
        assert_eq!(u.port(), Some(8443));
        assert!(u.is_template());
        assert!(UrlTemplate::parse("https://{{ alert.title }}/x").is_err());
        assert!(UrlTemplate::parse("not a url").is_err());
        let plain = UrlTemplate::parse("http://h/p").unwrap();
        assert!(!plain.is_template());
    }
}
