//! The `read-mailbox` filter: from, subject, attachments, date and seen state.

use crate::host::invalid;
use crate::types::{MailError, ReceivedMessage};
use crate::wit_actions::Filter;

/// A filter with its `since` bound already parsed.
#[derive(Debug, Default)]
pub struct Compiled {
    sender: Option<String>,
    subject: Option<String>,
    has_attachment: Option<bool>,
    since: Option<i64>,
    unseen: bool,
}

impl Compiled {
    /// Checks and prepares `filter`.
    pub fn new(filter: &Filter) -> Result<Self, MailError> {
        let since = match &filter.since {
            Some(s) => Some(parse_time(s).ok_or_else(|| {
                invalid(
                    "filter.since",
                    format!("`{s}` is not a date: use 2026-11-28 or 2026-11-28T09:30:00Z"),
                )
            })?),
            None => None,
        };
        Ok(Self {
            sender: filter.sender_contains.as_ref().map(|s| s.to_lowercase()),
            subject: filter.subject_contains.as_ref().map(|s| s.to_lowercase()),
            has_attachment: filter.has_attachment,
            since,
            unseen: filter.unseen.unwrap_or(false),
        })
    }

    /// The day to pass to a server's sent-date search: one day before `since`, so that
    /// a Date header in any time zone that the exact check would accept is included.
    pub fn sent_since(&self) -> Option<String> {
        let day = self.since?.div_euclid(86_400) - 1;
        let (y, m, d) = civil_from_days(day);
        Some(format!("{y:04}-{m:02}-{d:02}"))
    }

    /// Whether `m` passes every condition that is set.
    pub fn matches(&self, m: &ReceivedMessage) -> bool {
        if let Some(needle) = &self.sender {
            let hay = m
                .sender
                .as_ref()
                .map(|a| {
                    format!("{} <{}>", a.name.as_deref().unwrap_or_default(), a.email)
                        .to_lowercase()
                })
                .unwrap_or_default();
            if !hay.contains(needle.as_str()) {
                return false;
            }
        }
        if let Some(needle) = &self.subject
            && !m.subject.to_lowercase().contains(needle.as_str())
        {
            return false;
        }
        if let Some(want) = self.has_attachment
            && want == m.attachments.is_empty()
        {
            return false;
        }
        if let Some(since) = self.since {
            match m.date.as_deref().and_then(parse_time) {
                Some(t) if t >= since => {}
                _ => return false,
            }
        }
        if self.unseen && m.flags.iter().any(|f| f.eq_ignore_ascii_case("\\Seen")) {
            return false;
        }
        true
    }
}

/// Parses `YYYY-MM-DD` or RFC 3339 (`YYYY-MM-DDTHH:MM:SS[.frac](Z|±HH:MM)`) to Unix seconds.
pub fn parse_time(s: &str) -> Option<i64> {
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|b| b.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    if s.len() < 10 || s.as_bytes().get(4) != Some(&b'-') || s.as_bytes().get(7) != Some(&b'-') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=days_in_month(y, mo)).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    if s.len() == 10 {
        return Some(days * 86_400);
    }
    let b = s.as_bytes();
    if !matches!(b.get(10), Some(b'T' | b't' | b' '))
        || b.get(13) != Some(&b':')
        || b.get(16) != Some(&b':')
    {
        return None;
    }
    let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ if rest.len() == 6
            && matches!(rest.as_bytes()[0], b'+' | b'-')
            && rest.as_bytes()[3] == b':' =>
        {
            let oh: i64 = rest.get(1..3)?.parse().ok()?;
            let om: i64 = rest.get(4..6)?.parse().ok()?;
            let sign = if rest.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    Some(days * 86_400 + h * 3600 + mi * 60 + se - offset)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{Address, AttachmentInfo};

    fn msg() -> ReceivedMessage {
        ReceivedMessage {
            id: "1:1".into(),
            message_id: None,
            sender: Some(Address {
                name: Some("Grafana".into()),
                email: "alerts@grafana.example".into(),
            }),
            to: vec![],
            cc: vec![],
            date: Some("2026-11-03T09:00:00Z".into()),
            subject: "[ALERT] Disk full on db-1".into(),
            text: None,
            html: None,
            attachments: vec![AttachmentInfo {
                index: 0,
                name: "a.png".into(),
                content_type: "image/png".into(),
                size: 3,
            }],
            flags: vec!["\\Seen".into()],
            size: 10,
            attachments_omitted: false,
        }
    }

    fn filter() -> Filter {
        Filter {
            sender_contains: None,
            subject_contains: None,
            has_attachment: None,
            since: None,
            unseen: None,
        }
    }

    #[test]
    fn parses_times() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(parse_time("2026-11-03T09:00:00Z"), Some(1_793_696_400));
        assert_eq!(parse_time("2026-11-03T10:00:00+01:00"), Some(1_793_696_400));
        assert_eq!(parse_time("2026-11-03T09:00:00.250Z"), Some(1_793_696_400));
        for bad in [
            "",
            "2026-13-01",
            "2026-02-30",
            "yesterday",
            "2026-11-03T25:00:00Z",
            "2026-11-03T09:00:00",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn applies_each_condition() {
        let m = msg();
        assert!(Compiled::new(&filter()).unwrap().matches(&m));
        let f = |edit: fn(&mut Filter)| {
            let mut f = filter();
            edit(&mut f);
            Compiled::new(&f).unwrap().matches(&m)
        };
        assert!(f(|f| f.subject_contains = Some("alert".into())));
        assert!(!f(|f| f.subject_contains = Some("resolved".into())));
        assert!(f(|f| f.sender_contains = Some("GRAFANA".into())));
        assert!(!f(|f| f.sender_contains = Some("nagios".into())));
        assert!(f(|f| f.has_attachment = Some(true)));
        assert!(!f(|f| f.has_attachment = Some(false)));
        assert!(f(|f| f.since = Some("2026-11-03".into())));
        assert!(!f(|f| f.since = Some("2026-11-04".into())));
        assert!(!f(|f| f.unseen = Some(true)));
    }

    #[test]
    fn sent_since_is_the_day_before() {
        let mut f = filter();
        f.since = Some("2026-03-01T10:00:00+02:00".into());
        assert_eq!(
            Compiled::new(&f).unwrap().sent_since().as_deref(),
            Some("2026-02-28")
        );
        f.since = Some("2024-01-01".into());
        assert_eq!(
            Compiled::new(&f).unwrap().sent_since().as_deref(),
            Some("2023-12-31")
        );
        for day in [-1000, 0, 59, 60, 365, 11_016, 20_500] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn refuses_a_bad_since() {
        let mut f = filter();
        f.since = Some("last tuesday".into());
        match Compiled::new(&f) {
            Err(MailError::InvalidInput(e)) => assert_eq!(e.field, "filter.since"),
            other => panic!("{other:?}"),
        }
    }
}
