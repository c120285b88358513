//! Validation of addresses and header values (RFC 5322), refusing header injection.

use crate::host::invalid;
use crate::types::{Address, MailError};

const ATEXT_SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~";

/// Refuses CR, LF and other control characters in a header value.
pub fn check_header_text(field: &str, value: &str) -> Result<(), MailError> {
    if value.contains(['\r', '\n']) {
        return Err(invalid(
            field,
            "contains a line break (CR or LF); header values must be one line, \
             because a line break could inject other headers. Remove the line break",
        ));
    }
    if let Some(c) = value.chars().find(|c| c.is_control() && *c != '\t') {
        return Err(invalid(
            field,
            format!(
                "contains the control character U+{:04X}; remove it",
                c as u32
            ),
        ));
    }
    Ok(())
}

/// Validates an addr-spec (`local@domain`) as RFC 5321/5322 allow it on the wire.
pub fn check_email(field: &str, email: &str) -> Result<(), MailError> {
    check_header_text(field, email)?;
    if email.is_empty() {
        return Err(invalid(
            field,
            "is empty; give an address like name@example.com",
        ));
    }
    if email.trim() != email {
        return Err(invalid(
            field,
            format!("`{email}` has leading or trailing spaces; remove them"),
        ));
    }
    if email.len() > 254 {
        return Err(invalid(
            field,
            "is longer than 254 characters, the SMTP limit",
        ));
    }
    let Some(at) = email.rfind('@') else {
        return Err(invalid(
            field,
            format!("`{email}` has no `@`; give an address like name@example.com"),
        ));
    };
    let (local, domain) = (&email[..at], &email[at + 1..]);
    check_local_part(field, email, local)?;
    check_domain(field, email, domain)
}

fn check_local_part(field: &str, email: &str, local: &str) -> Result<(), MailError> {
    if local.is_empty() {
        return Err(invalid(
            field,
            format!("`{email}` has nothing before the `@`"),
        ));
    }
    if local.len() > 64 {
        return Err(invalid(
            field,
            format!("`{email}`: the part before `@` is over 64 characters"),
        ));
    }
    if !local.is_ascii() {
        return Err(invalid(
            field,
            format!(
                "`{email}`: the part before `@` is not ASCII, which needs SMTPUTF8; use an ASCII address"
            ),
        ));
    }
    if local.starts_with('"') {
        let quoted_ok =
            local.len() >= 2 && local.ends_with('"') && quoted_body_ok(&local[1..local.len() - 1]);
        return if quoted_ok {
            Ok(())
        } else {
            Err(invalid(
                field,
                format!("`{email}`: the quoted part before `@` is not well formed"),
            ))
        };
    }
    if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
        return Err(invalid(
            field,
            format!(
                "`{email}`: dots may not start or end the part before `@`, nor follow each other"
            ),
        ));
    }
    if let Some(c) = local
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '.' || ATEXT_SPECIALS.contains(*c)))
    {
        return Err(invalid(
            field,
            format!("`{email}`: `{c}` is not allowed before `@` unless that part is quoted"),
        ));
    }
    Ok(())
}

fn quoted_body_ok(body: &str) -> bool {
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if !matches!(chars.next(), Some(n) if (' '..='~').contains(&n)) {
                    return false;
                }
            }
            '"' => return false,
            ' '..='~' => {}
            _ => return false,
        }
    }
    true
}

fn check_domain(field: &str, email: &str, domain: &str) -> Result<(), MailError> {
    if domain.is_empty() {
        return Err(invalid(
            field,
            format!("`{email}` has no domain after the `@`"),
        ));
    }
    if domain.starts_with('[') {
        let inner = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']'));
        let ok = match inner {
            Some(v6) if v6.len() > 5 && v6[..5].eq_ignore_ascii_case("IPv6:") => {
                v6[5..].parse::<std::net::Ipv6Addr>().is_ok()
            }
            Some(v4) => v4.parse::<std::net::Ipv4Addr>().is_ok(),
            None => false,
        };
        return if ok {
            Ok(())
        } else {
            Err(invalid(
                field,
                format!("`{email}`: `{domain}` is not a valid address literal"),
            ))
        };
    }
    if !domain.is_ascii() {
        return Err(invalid(
            field,
            format!("`{email}`: the domain is not ASCII; write it in its xn-- (punycode) form"),
        ));
    }
    if domain.len() > 253 {
        return Err(invalid(
            field,
            format!("`{email}`: the domain is over 253 characters"),
        ));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(invalid(
                field,
                format!(
                    "`{email}`: `{domain}` is not a valid domain (labels of letters, digits and \
                     inner hyphens, separated by single dots)"
                ),
            ));
        }
    }
    Ok(())
}

/// Validates a whole address: its display name and its addr-spec.
pub fn check_address(field: &str, address: &Address) -> Result<(), MailError> {
    if let Some(name) = &address.name {
        check_header_text(&format!("{field}.name"), name)?;
        if name.chars().count() > 256 {
            return Err(invalid(
                format!("{field}.name"),
                "is over 256 characters; shorten it",
            ));
        }
    }
    check_email(&format!("{field}.email"), &address.email)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(r: Result<(), MailError>) -> (String, String) {
        match r {
            Err(MailError::InvalidInput(e)) => (e.field, e.reason),
            other => panic!("expected invalid-input, got {other:?}"),
        }
    }

    #[test]
    fn accepts_real_addresses() {
        for ok in [
            "ops@example.com",
            "first.last+tag@sub.example.co.uk",
            "o'brien@example.ie",
            "\"john doe\"@example.com",
            "user@[127.0.0.1]",
            "user@[IPv6:::1]",
            "postmaster@localhost",
            "a_b-c=d@xn--bcher-kva.example",
        ] {
            assert!(check_email("to", ok).is_ok(), "{ok} should pass");
        }
    }

    #[test]
    fn refuses_bad_addresses_with_a_reason() {
        for (bad, needle) in [
            ("", "empty"),
            ("ops.example.com", "no `@`"),
            ("@example.com", "nothing before"),
            ("ops@", "no domain"),
            ("ops@exa mple.com", "not a valid domain"),
            ("ops@-example.com", "not a valid domain"),
            ("o..ps@example.com", "dots"),
            (".ops@example.com", "dots"),
            ("op(s@example.com", "`(` is not allowed"),
            ("jörg@example.com", "SMTPUTF8"),
            ("ops@bücher.example", "punycode"),
            (" ops@example.com", "spaces"),
            ("ops@[300.1.1.1]", "address literal"),
        ] {
            let (field, why) = reason(check_email("message.to[0].email", bad));
            assert_eq!(field, "message.to[0].email");
            assert!(why.contains(needle), "{bad:?}: {why}");
        }
    }

    #[test]
    fn refuses_header_injection() {
        let (field, why) = reason(check_email("to", "ops@example.com\r\nBcc: x@evil.test"));
        assert_eq!(field, "to");
        assert!(why.contains("line break"));
        let (_, why) = reason(check_header_text("subject", "hi\nBcc: evil@x.test"));
        assert!(why.contains("CR or LF"));
        let (_, why) = reason(check_header_text("subject", "nul\u{0}byte"));
        assert!(why.contains("U+0000"));
        assert!(check_header_text("subject", "tab\tis fine, ünïcödé too").is_ok());
    }

    #[test]
    fn checks_display_names() {
        let a = Address {
            name: Some("Ops\r\nBcc: x@y.z".into()),
            email: "ops@example.com".into(),
        };
        let (field, _) = reason(check_address("message.sender", &a));
        assert_eq!(field, "message.sender.name");
    }
}
