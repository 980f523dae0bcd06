//! Random identifiers (UUIDs, session tokens, cookie values) and Kratos-style UUID parsing.

use std::fmt::Write as _;

/// Digits and ASCII letters, the alphabet of Kratos's `ory_st_` tokens.
const ALPHANUMERIC: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

/// A random version 4 UUID, lower-case and hyphenated.
pub(crate) fn new_uuid() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes)?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Ok(format_uuid(&bytes))
}

/// `len` random characters from [`ALPHANUMERIC`], without modulo bias.
pub(crate) fn random_alphanumeric(len: usize) -> Result<String, getrandom::Error> {
    // 248 = 4 * 62: bytes at or above it are dropped so every character is equally likely.
    const LIMIT: u8 = 248;
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        getrandom::fill(&mut buf)?;
        for &b in buf.iter().filter(|&&b| b < LIMIT) {
            if out.len() == len {
                break;
            }
            out.push(char::from(ALPHANUMERIC[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

/// Parses a UUID the way Kratos's UUID library does (canonical, 32 hex digits, `{...}` or
/// `urn:uuid:...`) and returns it canonical. The error is that library's message, which Kratos puts
/// into its 400 body.
pub(crate) fn parse_uuid(input: &str) -> Result<String, String> {
    let hyphenated = |s: &str| {
        let b = s.as_bytes();
        b.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-')
    };
    let hex: String = match input.len() {
        32 => input.to_owned(),
        36 if hyphenated(input) => input.replace('-', ""),
        38 if input.starts_with('{') && input.ends_with('}') && hyphenated(&input[1..37]) => {
            input[1..37].replace('-', "")
        }
        45 if input.starts_with("urn:uuid:") && hyphenated(&input[9..]) => {
            input[9..].replace('-', "")
        }
        36 | 38 | 45 => return Err(format!("uuid: incorrect UUID format in string {input:?}")),
        n => {
            return Err(format!(
                "uuid: incorrect UUID length {n} in string {input:?}"
            ))
        }
    };
    let nibble = |c: u8| char::from(c).to_digit(16);
    let mut bytes = [0u8; 16];
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        match (
            pair.first().and_then(|&c| nibble(c)),
            pair.get(1).and_then(|&c| nibble(c)),
        ) {
            // Both digits are below 16, so the byte cannot overflow.
            (Some(hi), Some(lo)) => *byte = (hi * 16 + lo) as u8,
            _ => return Err(format!("uuid: invalid UUID format in string {input:?}")),
        }
    }
    if hex.len() != 32 {
        return Err(format!("uuid: invalid UUID format in string {input:?}"));
    }
    Ok(format_uuid(&bytes))
}

/// Canonicalises `id` when it is a UUID, else returns it unchanged.
pub(crate) fn canonical(id: &str) -> String {
    parse_uuid(id).unwrap_or_else(|_| id.to_owned())
}

fn format_uuid(bytes: &[u8; 16]) -> String {
    let mut out = String::with_capacity(36);
    for (i, b) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_canonical() {
        let id = new_uuid().expect("random");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(parse_uuid(&id).as_deref(), Ok(id.as_str()));
    }

    #[test]
    fn parses_every_accepted_spelling() {
        let canonical = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
        for spelling in [
            canonical,
            "6BA7B810-9DAD-41D1-80B4-00C04FD430C8",
            "6ba7b8109dad41d180b400c04fd430c8",
            "{6ba7b810-9dad-41d1-80b4-00c04fd430c8}",
            "urn:uuid:6ba7b810-9dad-41d1-80b4-00c04fd430c8",
        ] {
            assert_eq!(parse_uuid(spelling).as_deref(), Ok(canonical), "{spelling}");
        }
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        for bad in [
            "",
            "abc",
            "zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz",
            "6ba7b810x9dad-41d1-80b4-00c04fd430c8",
            "é7b8109dad41d180b400c04fd430c8é",
            "{6ba7b810-9dad-41d1-80b4-00c04fd430c8]",
            "+ba7b810-9dad-41d1-80b4-00c04fd430c8",
        ] {
            assert!(parse_uuid(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_uuid("abc").unwrap_err(),
            r#"uuid: incorrect UUID length 3 in string "abc""#
        );
    }

    #[test]
    fn alphanumeric_has_the_requested_length() {
        let s = random_alphanumeric(100).expect("random");
        assert_eq!(s.len(), 100);
        assert!(s.bytes().all(|b| b.is_ascii_alphanumeric()));
    }
}
