//! Phone numbers, normalised once wherever they enter (configuration, commands, transports, the
//! web chat): `+15550001111`, `15550001111`, `+1 555 000 1111` and `00 1 555-000-1111` are the
//! same contact, `+15550001111` (E.164).

use std::fmt;

/// A phone number in E.164 form (`+` and 8 to 15 digits).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phone(String);

/// Why a phone number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PhoneError {
    #[error("a phone number may only contain digits, spaces, '+', '-', '.', '(' and ')'")]
    /// A character a phone number cannot have.
    BadCharacter,
    #[error("a phone number needs 8 to 15 digits including the country code")]
    /// Too few or too many digits.
    BadLength,
}

impl Phone {
    /// Normalises a number written in international form (with or without `+` or `00`).
    pub fn parse(raw: &str) -> Result<Self, PhoneError> {
        let raw = raw.trim();
        let (rest, _plus) = match raw.strip_prefix('+') {
            Some(r) => (r, true),
            None => (raw, false),
        };
        let mut digits = String::with_capacity(16);
        for c in rest.chars() {
            match c {
                '0'..='9' => digits.push(c),
                ' ' | '-' | '.' | '(' | ')' | '\u{a0}' => {}
                _ => return Err(PhoneError::BadCharacter),
            }
        }
        // The international call prefix written out.
        let digits = match digits.strip_prefix("00") {
            Some(d) if !raw.starts_with('+') => d.to_owned(),
            _ => digits,
        };
        if digits.starts_with('0') || !(8..=15).contains(&digits.len()) {
            return Err(PhoneError::BadLength);
        }
        Ok(Self(format!("+{digits}")))
    }

    /// `+15550001111`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `15550001111` (WhatsApp ids and the web chat use digits only).
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }
}

impl fmt::Display for Phone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses a comma-separated list (e.g. `ADMIN_NUMBERS`); returns the numbers and the entries
/// that are not numbers.
pub fn parse_list(raw: &str) -> (Vec<Phone>, Vec<String>) {
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match Phone::parse(part) {
            Ok(p) if !ok.contains(&p) => ok.push(p),
            Ok(_) => {}
            Err(_) => bad.push(part.to_owned()),
        }
    }
    (ok, bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_number_written_differently_is_one_number() {
        for raw in [
            "+15550001111",
            "15550001111",
            "+1 555 000 1111",
            "+1 (555) 000-1111",
            "001 555.000.1111",
        ] {
            assert_eq!(Phone::parse(raw).unwrap().as_str(), "+15550001111", "{raw}");
        }
        assert_eq!(
            Phone::parse("+15550001111").unwrap().digits(),
            "15550001111"
        );
    }

    #[test]
    fn non_numbers_are_refused() {
        assert_eq!(Phone::parse("call me"), Err(PhoneError::BadCharacter));
        assert_eq!(Phone::parse("12345"), Err(PhoneError::BadLength));
        assert_eq!(
            Phone::parse("+1234567890123456"),
            Err(PhoneError::BadLength)
        );
        assert_eq!(Phone::parse(""), Err(PhoneError::BadLength));
        assert_eq!(Phone::parse("0555000111"), Err(PhoneError::BadLength));
    }

    #[test]
    fn lists_keep_order_drop_duplicates_and_report_junk() {
        let (ok, bad) = parse_list("+1 555 000 1111, 15550001111,abc, 4915112345678");
        assert_eq!(
            ok.iter().map(Phone::as_str).collect::<Vec<_>>(),
            ["+15550001111", "+4915112345678"]
        );
        assert_eq!(bad, ["abc"]);
    }
}
