//! Secrets kept out of printed connection URLs (startup errors, logs, `Dsn`'s `Debug`).

/// A connection URL with its secrets masked: the password in its user info
/// (`scheme://user:secret@host` → `scheme://user:***@host`) and the value of every query
/// parameter whose name suggests a secret (`?password=…`, `sslpassword`, `token`, `api_key`…:
/// see [`secret_param`]), which libpq-style URLs accept as well.
pub fn redact_url_password(url: &str) -> String {
    let (head, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    let mut out = head;
    // The user info first: a password holding '?' or '/' must not be taken for a query or path.
    let rest = match user_info_end(rest) {
        Some(at) => {
            out.push_str(&masked_user_info(&rest[..at]));
            &rest[at..]
        }
        None => rest,
    };
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    out.push_str(base);
    if let Some(query) = query {
        out.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((name, _)) if secret_param(name) => format!("{name}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push_str(&params.join("&"));
    }
    out
}

/// Whether a URL query parameter's name suggests a secret value (case-insensitive; `%`-encoded
/// names are not decoded, so none hides behind an encoding by accident of spelling).
fn secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "pass",
        "pwd",
        "secret",
        "token",
        "key",
        "auth",
        "credential",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// Where the user info of a URL's part after `scheme://` ends (its `@`), if it has one: the
/// last `@` before the first `/`, `?` or `#` that follows the first `@`, so a password holding
/// `@`, `?` or `/` (unencoded, as people write them) stays inside it. An `@` after such a
/// character is read as part of the path or query instead when the URL reads so as a valid
/// one: in a query (`h:5432/db?password=a@b`), or in a path under a host without a port
/// (`sqlite://data/x@y.db`). Anything else is taken for user info: masking too much beats
/// printing a password.
fn user_info_end(rest: &str) -> Option<usize> {
    const DELIMITERS: [char; 3] = ['/', '?', '#'];
    let first_at = rest.find('@')?;
    let delimiter = rest[first_at..]
        .find(DELIMITERS)
        .map_or(rest.len(), |i| first_at + i);
    let at = rest[..delimiter].rfind('@')?;
    let Some(authority_end) = rest[..at].find(DELIMITERS) else {
        return Some(at);
    };
    let authority = &rest[..authority_end];
    let port = authority.rsplit_once(':').map(|(_, port)| port);
    let valid_host = !authority.is_empty()
        && port.is_none_or(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let before_at = &rest[authority_end..at];
    let in_query = before_at
        .split_once('?')
        .is_some_and(|(_, query)| query.contains('='));
    let in_path = !before_at.contains('?') && port.is_none();
    if valid_host && (in_query || in_path) {
        None
    } else {
        Some(at)
    }
}

/// `user:secret` → `user:***`; a user info without `:` is a password alone
/// (`redis://secret@host`), `***`.
fn masked_user_info(userinfo: &str) -> String {
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Dsn;

    #[test]
    fn url_password_masking_leaves_other_urls_alone() {
        assert_eq!(
            redact_url_password("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
        assert_eq!(redact_url_password("redis://pw@h:1"), "redis://***@h:1");
        assert_eq!(
            redact_url_password("sqlite://data/x.db"),
            "sqlite://data/x.db"
        );
        assert_eq!(
            redact_url_password("postgres://u:p@h/db?sslmode=require"),
            "postgres://u:***@h/db?sslmode=require"
        );
    }

    #[test]
    fn secrets_in_url_query_parameters_are_masked_too() {
        assert_eq!(
            redact_url_password("postgres://db:5432/sb?user=sb&password=hunter2&sslmode=require"),
            "postgres://db:5432/sb?user=sb&password=***&sslmode=require"
        );
        assert_eq!(
            redact_url_password(
                "postgresql://u:p@h/db?sslmode=verify-full&sslpassword=k3y&PWD=x&application_name=sb"
            ),
            "postgresql://u:***@h/db?sslmode=verify-full&sslpassword=***&PWD=***&application_name=sb"
        );
        for name in [
            "pass",
            "passwd",
            "secret",
            "auth_token",
            "api_key",
            "apikey",
            "credentials",
        ] {
            assert_eq!(
                redact_url_password(&format!("rediss://h:6380/0?{name}=s3cret")),
                format!("rediss://h:6380/0?{name}=***"),
                "{name}"
            );
        }
        // A password in the user info and in the query; a value holding '@' or '?'.
        let masked = redact_url_password("postgres://u:one@h/db?password=tw@o?x&user=u");
        assert!(
            !masked.contains("one") && !masked.contains("tw@o"),
            "{masked}"
        );
        assert_eq!(masked, "postgres://u:***@h/db?password=***&user=u");
        assert_eq!(
            redact_url_password("sqlite://data/x.db?mode=rwc"),
            "sqlite://data/x.db?mode=rwc"
        );
        let dsn = Dsn::new("postgres://db/sb?user=sb&password=hunter2");
        assert!(!format!("{dsn} {dsn:?}").contains("hunter2"));
    }

    #[test]
    fn passwords_holding_url_delimiters_are_masked_whole() {
        for (url, masked) in [
            ("postgres://u:p?ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p/ss@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgres://u:p@ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p#ss@h/db", "postgres://u:***@h/db"),
            ("postgres://u:1234/x@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p?a=b@h/db", "postgres://u:***@h/db"),
            ("redis://:s/e?c@redis:6379/0", "redis://:***@redis:6379/0"),
            (
                "postgres://u:p?ss@h/db?password=x&user=u",
                "postgres://u:***@h/db?password=***&user=u",
            ),
            // An '@' in a valid URL's query or path is no user info.
            (
                "postgres://h:5432/db?password=s3@cret",
                "postgres://h:5432/db?password=***",
            ),
            ("rediss://h/0?apikey=s3@cret", "rediss://h/0?apikey=***"),
            ("sqlite://data/x@y.db", "sqlite://data/x@y.db"),
        ] {
            assert_eq!(redact_url_password(url), masked, "{url}");
        }
    }
}
