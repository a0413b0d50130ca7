//! Keeping credentials out of error texts.
//!
//! Errors of HTTP clients quote the URL they failed on. A pre-signed URL carries the access
//! key id and a signature in its query string (`X-Amz-Credential=...`), and a URL may carry
//! `user:password@` before its host. [`urls`] strips both from every URL in a text, so that
//! an error can be printed and logged as it is. [`secrets`] replaces known secret values
//! wherever they occur, for texts that did not come through this crate.

use std::borrow::Cow;

/// What stands where a removed query string or user info was.
pub const REDACTED: &str = "<redacted>";

/// `text` with the query string, fragment and user info of every `http://` or `https://`
/// URL in it replaced by [`REDACTED`]: `http://host:9000/bucket/?X-Amz-Credential=AK...`
/// becomes `http://host:9000/bucket/?<redacted>`.
pub fn urls(text: &str) -> Cow<'_, str> {
    if !text.contains("http://") && !text.contains("https://") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find_url(rest) {
        out.push_str(&rest[..start]);
        let url = &rest[start..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | '<' | '`'))
            .unwrap_or(url.len());
        out.push_str(&clean_url(&url[..end]));
        rest = &url[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// `text` with every occurrence of each of `secrets` (those of four characters or more; a
/// shorter one would hide ordinary words) replaced by [`REDACTED`].
pub fn secrets<'a, S: AsRef<str>>(text: &'a str, secrets: &[S]) -> Cow<'a, str> {
    let mut text = Cow::Borrowed(text);
    for secret in secrets {
        let secret = secret.as_ref();
        if secret.len() >= 4 && text.contains(secret) {
            text = Cow::Owned(text.replace(secret, REDACTED));
        }
    }
    text
}

fn find_url(text: &str) -> Option<usize> {
    match (text.find("http://"), text.find("https://")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// One URL without its user info, query string and fragment.
fn clean_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => format!("{REDACTED}@{host}"),
        None => authority.to_string(),
    };
    let (path, cut) = match tail.find(['?', '#']) {
        Some(i) => (&tail[..i], true),
        None => (tail, false),
    };
    let mut out = format!("{scheme}://{host}{path}");
    if cut {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presigned_urls_lose_their_query() {
        let text = "error sending request for url (http://127.0.0.1:1/a-bucket/?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20261206%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=a10f)";
        let clean = urls(text);
        assert_eq!(
            clean,
            "error sending request for url (http://127.0.0.1:1/a-bucket/?<redacted>)"
        );
        assert!(!clean.contains("AKIDEXAMPLE"));
    }

    #[test]
    fn user_info_fragments_and_several_urls() {
        let text = "a https://user:pw@example.com:8443/p/q#frag and http://h/x?y=1 (done)";
        assert_eq!(
            urls(text),
            "a https://<redacted>@example.com:8443/p/q?<redacted> and http://h/x?<redacted> (done)"
        );
        // Nothing to do: borrowed as it is.
        assert!(matches!(urls("no url here"), Cow::Borrowed(_)));
        assert_eq!(urls("http://host:9000/b/k"), "http://host:9000/b/k");
        assert_eq!(urls("see http://"), "see http://");
    }

    #[test]
    fn secrets_are_replaced_wherever_they_occur() {
        let text = "key minioadmin-secret in minioadmin-secret/x";
        assert_eq!(
            secrets(text, &["minioadmin-secret"]),
            "key <redacted> in <redacted>/x"
        );
        // Short or empty values are left alone.
        assert_eq!(secrets("a b", &["", "a"]), "a b");
    }
}
