//! Keeps PINs out of error messages. A body the client could not use is
//! quoted in the error (a short excerpt), and errors are logged on every retry
//! and stored in outcome records; an access code's body holds its PIN. So
//! every excerpt goes through [`redact`] first: the value of any JSON member
//! named `code` or `pin` (any case) becomes `[redacted]`.
//!
//! It is a scan, not a parse, so it also works on what is not valid JSON: a
//! body cut off mid-value (everything after the member's colon is hidden), an
//! HTML page quoting JSON, JSON escaped inside a JSON string (`{\"code\":\"1234\"}`),
//! members with whitespace or `\u` escapes in the key. It hides too much rather
//! than too little: a string value whose end it cannot be sure of is hidden up
//! to the next plain quote, or to the end. Objects, arrays, `null` and booleans
//! are kept (`"code": {"_errors": [...]}` in Seam's validation errors is not a
//! PIN), and so is every other member: Seam's error envelope names its error
//! in `error.type`, and issues in `error_code` / `warning_code`, none of which
//! is touched.

/// Member names whose values are PINs, compared without regard to case.
const SECRET_KEYS: [&str; 2] = ["code", "pin"];

/// What a hidden value is replaced with.
pub(crate) const REDACTED: &str = "[redacted]";

/// The longest member name (as written, escapes included) looked at.
const MAX_KEY_LEN: usize = 40;

/// A text with its PINs hidden, and the PINs that were hidden (to scrub them
/// from other messages about the same body, e.g. a JSON parser's).
#[derive(Debug)]
pub(crate) struct Redacted {
    /// The text, every secret value replaced by [`REDACTED`].
    pub text: String,
    /// The values hidden, as written and (when different) unescaped.
    pub secrets: Vec<String>,
}

/// Hides the value of every `code` / `pin` member of `text`; see the module docs.
pub(crate) fn redact(text: &str) -> Redacted {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut secrets = Vec::new();
    let mut copied = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'"' {
            i += 1;
            continue;
        }
        let Some((value_start, value_end, quoted)) = secret_value_at(b, i) else {
            i += 1;
            continue;
        };
        let secret = &text[value_start..value_end];
        if !secret.is_empty() {
            secrets.push(secret.to_string());
            let unescaped = unescape(secret);
            if unescaped != secret {
                secrets.push(unescaped);
            }
        }
        out.push_str(&text[copied..value_start]);
        // A bare value (a number, or garbage) at the top level becomes a string,
        // so JSON keeps its shape; inside an escaped string it stays bare.
        let bare_top_level = !quoted && backslashes_before(b, i) == 0;
        if bare_top_level {
            out.push('"');
        }
        out.push_str(REDACTED);
        if bare_top_level {
            out.push('"');
        }
        copied = value_end;
        i = value_end.max(i + 1);
    }
    out.push_str(&text[copied..]);
    Redacted { text: out, secrets }
}

/// Replaces every occurrence of one of `secrets` in `message` by [`REDACTED`].
pub(crate) fn scrub(message: &str, secrets: &[String]) -> String {
    let mut secrets: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| !s.is_empty()).collect();
    // Longest first, so a PIN that contains another is hidden whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    let mut message = message.to_string();
    for secret in secrets {
        message = message.replace(secret, REDACTED);
    }
    message
}

/// When the `"` at `open` starts a `code` / `pin` member name followed by a
/// colon and a scalar value: the byte range of that value (without its quotes)
/// and whether it was quoted.
fn secret_value_at(b: &[u8], open: usize) -> Option<(usize, usize, bool)> {
    // JSON nested inside a JSON string escapes its quotes: the number of
    // backslashes before a quote tells how deep it is, and its closing quote
    // has as many.
    let level = backslashes_before(b, open);
    let key_start = open + 1;
    let close = closing_quote(b, key_start, level, Some(MAX_KEY_LEN))?;
    let key = std::str::from_utf8(&b[key_start..close - level]).ok()?;
    if !is_secret_key(key) {
        return None;
    }
    let mut p = skip_space(b, close + 1, level);
    if b.get(p) != Some(&b':') {
        return None;
    }
    p = skip_space(b, p + 1, level);
    if p >= b.len() {
        return None;
    }
    if b[p..].iter().take(level).all(|&c| c == b'\\') && b.get(p + level) == Some(&b'"') {
        let start = p + level + 1;
        // Cut off mid-value: hide everything to the end.
        let end = closing_quote(b, start, level, None).map_or(b.len(), |c| c - level);
        return Some((start, end, true));
    }
    if matches!(b[p], b'{' | b'[') || ["null", "true", "false"].iter().any(|w| is_word_at(b, p, w)) {
        return None;
    }
    let end = b[p..].iter().position(|&c| is_delimiter(c)).map_or(b.len(), |n| p + n);
    (end > p).then_some((p, end, false))
}

/// The index of the quote that closes a string opened at `level` whose
/// content starts at `from`: a `"` with exactly `level` backslashes before it
/// (any other count is part of the content, which errs towards hiding more).
fn closing_quote(b: &[u8], from: usize, level: usize, limit: Option<usize>) -> Option<usize> {
    let end = limit.map_or(b.len(), |l| b.len().min(from + l + level + 1));
    (from..end).find(|&j| b[j] == b'"' && j - from >= level && backslashes_before(b, j) == level)
}

/// How many backslashes come right before index `i`.
fn backslashes_before(b: &[u8], i: usize) -> usize {
    b[..i].iter().rev().take_while(|&&c| c == b'\\').count()
}

/// JSON whitespace; inside an escaped string also its escapes `\n`, `\r`, `\t`.
fn skip_space(b: &[u8], mut p: usize, level: usize) -> usize {
    loop {
        match b.get(p) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => p += 1,
            Some(b'\\') if level > 0 && matches!(b.get(p + 1), Some(b'n' | b'r' | b't')) => p += 2,
            _ => return p,
        }
    }
}

fn is_word_at(b: &[u8], p: usize, word: &str) -> bool {
    b[p..].starts_with(word.as_bytes()) && b.get(p + word.len()).is_none_or(|&c| is_delimiter(c))
}

/// What ends a bare (unquoted) value.
fn is_delimiter(c: u8) -> bool {
    matches!(c, b',' | b'}' | b']' | b'"' | b'\\' | b' ' | b'\t' | b'\n' | b'\r' | b'<' | b'&' | b';')
}

fn is_secret_key(raw: &str) -> bool {
    let key = unescape(raw);
    SECRET_KEYS.iter().any(|k| key.trim().eq_ignore_ascii_case(k))
}

/// JSON string escapes undone (`\uXXXX`, `\n`, `\"`, ...); anything that is
/// not a valid escape is kept as written.
fn unescape(raw: &str) -> String {
    if !raw.contains('\\') {
        return raw.to_string();
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('u') => {
                let hex: String = chars.clone().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().filter(|_| hex.len() == 4).and_then(char::from_u32) {
                    Some(decoded) => {
                        out.push(decoded);
                        for _ in 0..4 {
                            chars.next();
                        }
                    }
                    None => out.push_str("\\u"),
                }
            }
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(text: &str) -> String {
        redact(text).text
    }

    #[test]
    fn the_pin_of_an_access_code_body_is_hidden_and_the_rest_kept() {
        let body = r#"{"access_code":{"access_code_id":"a","code":"1234","type":"ongoing","errors":[{"error_code":"device_offline"}]},"ok":true}"#;
        let r = redact(body);
        assert_eq!(
            r.text,
            r#"{"access_code":{"access_code_id":"a","code":"[redacted]","type":"ongoing","errors":[{"error_code":"device_offline"}]},"ok":true}"#
        );
        assert_eq!(r.secrets, vec!["1234".to_string()]);
    }

    #[test]
    fn numbers_spacing_case_and_pin_members_are_hidden() {
        assert_eq!(hidden(r#"{"code": 1234}"#), r#"{"code": "[redacted]"}"#);
        assert_eq!(hidden("{\"Code\" \n :\t\"98765\"}"), "{\"Code\" \n :\t\"[redacted]\"}");
        assert_eq!(hidden(r#"{"pin":"4321","PIN":4321}"#), r#"{"pin":"[redacted]","PIN":"[redacted]"}"#);
        assert_eq!(hidden(r#"{"\u0063ode":"1234"}"#), r#"{"\u0063ode":"[redacted]"}"#);
        assert_eq!(hidden(r#"{"code":12ab34,"x":1}"#), r#"{"code":"[redacted]","x":1}"#);
    }

    #[test]
    fn a_body_cut_off_mid_value_hides_everything_after_the_colon() {
        assert_eq!(hidden(r#"{"access_code":{"code":"12"#), r#"{"access_code":{"code":"[redacted]"#);
        assert_eq!(hidden(r#"{"access_code":{"code":12"#), r#"{"access_code":{"code":"[redacted]""#);
        assert_eq!(hidden(r#"{"code": "#), r#"{"code": "#);
        assert_eq!(hidden("{\"code\": \""), "{\"code\": \"[redacted]");
        assert_eq!(hidden(r#"{"co"#), r#"{"co"#);
    }

    #[test]
    fn escaped_quotes_inside_a_value_do_not_end_it_early() {
        let r = redact(r#"{"code":"12\"34","name":"n"}"#);
        assert_eq!(r.text, r#"{"code":"[redacted]","name":"n"}"#);
        assert!(r.secrets.contains(&"12\"34".to_string()));
    }

    #[test]
    fn json_escaped_inside_a_string_or_html_is_hidden_too() {
        assert_eq!(
            hidden(r#"{"error":{"type":"x","message":"bad: {\"code\":\"1234\",\"a\":1}"}}"#),
            r#"{"error":{"type":"x","message":"bad: {\"code\":\"[redacted]\",\"a\":1}"}}"#
        );
        assert_eq!(hidden(r#"<pre>{"code":"5555"}</pre>"#), r#"<pre>{"code":"[redacted]"}</pre>"#);
    }

    #[test]
    fn error_types_issue_codes_objects_and_nulls_are_kept() {
        for kept in [
            r#"{"error":{"type":"invalid_input","validation_errors":{"code":{"_errors":["Required"]}}}}"#,
            r#"{"error_code":"failed_to_set_on_device","warning_code":"x","code":null,"pin":true,"codes":"1"}"#,
            r#"{"code":["1234"]}"#,
            "plain text with code: 1234 in it",
        ] {
            assert_eq!(hidden(kept), kept);
        }
    }

    #[test]
    fn multibyte_text_around_a_pin_is_kept_whole() {
        assert_eq!(
            hidden(r#"{"name":"Zoë ✓","code":"1234","n":"é"}"#),
            r#"{"name":"Zoë ✓","code":"[redacted]","n":"é"}"#
        );
    }

    #[test]
    fn scrub_hides_the_secrets_a_parser_quotes() {
        let secrets = vec!["1234".to_string()];
        assert_eq!(
            scrub("invalid type: integer `1234`, expected a string", &secrets),
            "invalid type: integer `[redacted]`, expected a string"
        );
    }
}
