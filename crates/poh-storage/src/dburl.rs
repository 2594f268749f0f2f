//! Database URLs: which `--db` values name a PostgreSQL store, and how a URL is shown in
//! messages (never with its password).

use std::path::Path;

/// True when `db` names a PostgreSQL database (`postgres://...` or `postgresql://...`)
/// rather than an SQLite file.
pub fn is_database_url(db: &Path) -> bool {
    db.to_str().is_some_and(is_url_str)
}

pub(crate) fn is_url_str(s: &str) -> bool {
    s.starts_with("postgres://") || s.starts_with("postgresql://")
}

/// Where a store is, for messages and logs: the database URL without its password when
/// `db` is one, the base directory otherwise.
pub fn store_location(base: &Path, db: &Path) -> String {
    match db.to_str().filter(|s| is_url_str(s)) {
        Some(url) => redact_url(url),
        None => base.display().to_string(),
    }
}

/// `url` with any password replaced by `***`: the one in the user part
/// (`postgres://user:secret@host/db`) and any `password=` parameter. What every message,
/// log line and report shows of a database URL.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return redact_params(url);
    };
    let (head, rest) = url.split_at(scheme_end);
    let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(auth_end);
    let authority = match authority.rfind('@') {
        Some(at) => {
            let (userinfo, host) = authority.split_at(at);
            match userinfo.find(':') {
                Some(colon) => format!("{}:***{host}", &userinfo[..colon]),
                None => authority.to_owned(),
            }
        }
        None => authority.to_owned(),
    };
    format!("{head}{authority}{}", redact_params(tail))
}

/// Replaces the value of every `password=` parameter (query string or key/value form).
fn redact_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("password=") {
        let boundary = i == 0 || matches!(rest.as_bytes()[i - 1], b'?' | b'&' | b' ');
        let value_start = i + "password=".len();
        out.push_str(&rest[..value_start]);
        rest = &rest[value_start..];
        if boundary {
            let end = rest.find(['&', ' ']).unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        for (url, want) in [
            (
                "postgres://poh:s3cr%40t@db.example:5432/poh",
                "postgres://poh:***@db.example:5432/poh",
            ),
            (
                "postgresql://poh:p@ss@host/db?sslmode=require",
                "postgresql://poh:***@host/db?sslmode=require",
            ),
            ("postgres://poh@host/db", "postgres://poh@host/db"),
            ("postgres://host/db", "postgres://host/db"),
            (
                "postgres://u@h/db?password=hunter2&application_name=x",
                "postgres://u@h/db?password=***&application_name=x",
            ),
            (
                "postgres://u@h/db?user=x&password=a%26b",
                "postgres://u@h/db?user=x&password=***",
            ),
            ("postgres://u:pw@h", "postgres://u:***@h"),
        ] {
            let got = redact_url(url);
            assert_eq!(got, want, "{url}");
            for secret in ["s3cr", "p@ss", "hunter2", "a%26b", ":pw@"] {
                assert!(!got.contains(secret), "{got}");
            }
        }
    }

    #[test]
    fn only_postgres_urls_are_urls() {
        assert!(is_database_url(Path::new("postgres://u@h/db")));
        assert!(is_database_url(Path::new("postgresql://h/db")));
        assert!(!is_database_url(Path::new("data/poh.db")));
        assert!(!is_database_url(Path::new("./postgres://x")));
        assert!(!is_database_url(Path::new("mysql://h/db")));
    }
}
