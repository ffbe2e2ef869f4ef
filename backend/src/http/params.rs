//! OAuth request parameters from a query string or form body (RFC 6749 §3.1: no repeats, empty = absent,
//! unknown ones ignored).

use std::collections::HashMap;

use axum::http::{header, HeaderMap};

/// Parsed `application/x-www-form-urlencoded` parameters.
#[derive(Debug)]
pub struct Params {
    known: &'static [&'static str],
    values: HashMap<String, String>,
    /// Every parameter given more than once, in the order first repeated.
    repeated: Vec<String>,
}

/// Longest parameter value accepted; longer ones are refused as malformed.
pub const MAX_VALUE_LEN: usize = 4096;

impl Params {
    /// Parses a query string or form body, keeping only the `known` parameters: others are ignored
    /// whatever they hold, repeated or long.
    pub fn parse(input: &[u8], known: &'static [&'static str]) -> Self {
        let mut params = Params { known, values: HashMap::new(), repeated: Vec::new() };
        for (key, value) in form_urlencoded::parse(input) {
            if value.is_empty() || !known.contains(&key.as_ref()) {
                continue;
            }
            if params.values.insert(key.to_string(), value.into_owned()).is_some() && !params.is_repeated(&key) {
                params.repeated.push(key.into_owned());
            }
        }
        params
    }

    /// A parameter's value; empty values count as absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        debug_assert!(self.known.contains(&key), "parameter {key} read but not declared known");
        self.values.get(key).map(String::as_str)
    }

    /// The first parameter that was given more than once.
    pub fn duplicate(&self) -> Option<&str> {
        self.repeated.first().map(String::as_str)
    }

    /// Whether `key` was given more than once (whichever others were too).
    pub fn is_repeated(&self, key: &str) -> bool {
        self.repeated.iter().any(|k| k == key)
    }

    /// The first parameter whose value is longer than [`MAX_VALUE_LEN`].
    pub fn oversized(&self) -> Option<&str> {
        self.values.iter().find(|(_, v)| v.len() > MAX_VALUE_LEN).map(|(k, _)| k.as_str())
    }
}

/// Whether the request body is declared as a form (parameters such as `; charset=utf-8` allowed).
pub fn is_form(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_flagged_and_empties_ignored() {
        let p = Params::parse(b"a=1&b=&a=2&scope=openid+profile&c=1&c=2&a=3", &["a", "b", "c", "scope"]);
        assert_eq!(p.duplicate(), Some("a"));
        assert!(p.is_repeated("a") && p.is_repeated("c") && !p.is_repeated("scope"), "every repeat is seen");
        assert_eq!(p.get("b"), None);
        assert_eq!(p.get("scope"), Some("openid profile"));
    }

    #[test]
    fn unknown_parameters_are_ignored_even_repeated_or_long() {
        let long = "x".repeat(MAX_VALUE_LEN + 1);
        let p = Params::parse(format!("data=None&data=1&extra={long}&state=s").as_bytes(), &["state"]);
        assert_eq!((p.duplicate(), p.oversized(), p.get("state")), (None, None, Some("s")));
    }

    #[test]
    fn form_content_type_with_charset() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8".parse().unwrap());
        assert!(is_form(&h));
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        assert!(!is_form(&h));
    }
}
