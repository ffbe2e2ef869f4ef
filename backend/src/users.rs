//! Rules for usernames and group names.

/// Normalises a username: ASCII letters (lower-cased), digits, `.`, `_`, `-`; 1-64 characters,
/// starting with a letter or digit. The result is also the `sub` claim, so it is a valid
/// JupyterHub username as it stands.
pub fn normalize_username(input: &str) -> Result<String, String> {
    let name = input.to_ascii_lowercase();
    let ok = (1..=64).contains(&name.len())
        && name.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(name)
    } else {
        Err("a username is 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit".into())
    }
}

/// Checks a group name: 1-64 ASCII letters, digits, `.`, `_`, `-`, `:` or `@`.
pub fn check_group(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':' | b'@'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid group name (ASCII letters, digits, . _ - : @)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert_eq!(normalize_username("Carol").unwrap(), "carol");
        for bad in ["", " carol", "carol ", "a/b", ".", "..", "ca\u{0440}ol", "-x"] {
            assert!(normalize_username(bad).is_err(), "{bad:?}");
        }
    }
}
