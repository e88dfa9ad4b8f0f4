//! Keeping secrets out of error text, logs and stored outcomes: the query string of any URL (a
//! SAS) and any `sig=` value are removed before text is shown or stored.

/// What stands where a secret was.
pub const REDACTED: &str = "<redacted>";

/// `text` with the query string of every `http(s)://` URL and the value of every `sig=`
/// parameter replaced by [`REDACTED`].
pub fn secrets(text: &str) -> String {
    signatures(&url_queries(text))
}

/// An error and its sources as one line (`a: b: c`), without secrets. For transport errors
/// (reqwest, hyper, object_store), whose text carries the full request URL.
pub fn transport_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    secrets(&text)
}

/// Drops the query string of every URL in `text`.
fn url_queries(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = find_url(rest) {
        let (before, url) = rest.split_at(at);
        out.push_str(before);
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | ']'))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        match url.split_once('?') {
            Some((base, _)) => {
                out.push_str(base);
                out.push('?');
                out.push_str(REDACTED);
            }
            None => out.push_str(url),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Replaces the value of every `sig=` parameter (a SAS signature) in `text`.
fn signatures(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("sig=") {
        let (before, value) = rest.split_at(at + "sig=".len());
        out.push_str(before);
        let end = value
            .find(|c: char| c == '&' || c.is_whitespace() || matches!(c, ')' | '"' | '\''))
            .unwrap_or(value.len());
        if end > 0 {
            out.push_str(REDACTED);
        }
        rest = &value[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_query_and_signatures_their_value() {
        let text = "error sending request for url (http://127.0.0.1:1/c/b?sv=1&sig=AbC%2B=&sp=r): \
                    connection refused; SAS sv=1&sig=xyz&se=2 and https://h/p";
        let out = secrets(text);
        assert!(!out.contains("AbC"), "{out}");
        assert!(!out.contains("xyz"), "{out}");
        assert!(
            out.contains("http://127.0.0.1:1/c/b?<redacted>): connection refused"),
            "{out}"
        );
        assert!(out.contains("sig=<redacted>&se=2"), "{out}");
        assert!(out.ends_with("https://h/p"), "{out}");
        assert_eq!(secrets(&out), out, "redacting twice changes nothing");
        assert_eq!(secrets("sig="), "sig=");
        assert_eq!(secrets("plain text"), "plain text");
    }

    #[test]
    fn error_chains_are_joined_and_redacted() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("request to http://x/y?sig=secret failed")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::other("reset by peer"));
        let text = transport_error(&e);
        assert_eq!(
            text,
            "request to http://x/y?<redacted> failed: reset by peer"
        );
    }
}
