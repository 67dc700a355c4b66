//! Which store to use: `--store`, `JOBD_STORE`, config key `store`.

use super::{postgres, StoreError};
use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// The embedded store in the state directory.
    Sqlite,
    /// A PostgreSQL database, by a libpq URL (`postgres://USER@HOST:PORT/DB`,
    /// `?host=/run/postgresql` for a socket directory).
    Postgres(String),
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, StoreError> {
        let s = s.trim();
        if s.is_empty() || s == "sqlite" {
            return Ok(StoreUrl::Sqlite);
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            postgres::check_url(s)?;
            return Ok(StoreUrl::Postgres(s.to_string()));
        }
        Err(StoreError::Config(format!(
            "store must be `sqlite` or a URL postgres://USER@HOST:PORT/DB, not {:?}",
            postgres::mask(s)
        )))
    }

    /// The URL with any password replaced by `****`: the only form that is shown.
    pub fn masked(&self) -> String {
        match self {
            StoreUrl::Sqlite => "sqlite".into(),
            StoreUrl::Postgres(url) => postgres::mask(url),
        }
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl serde::Serialize for StoreUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(StoreUrl::parse("").ok(), Some(StoreUrl::Sqlite));
        assert_eq!(StoreUrl::parse("sqlite").ok(), Some(StoreUrl::Sqlite));
        for good in [
            "postgres://jobd@127.0.0.1:5432/jobd",
            "postgresql://jobd:secret@db.example/jobd?sslmode=disable",
            "postgres://jobd@/jobd?host=/run/postgresql",
        ] {
            assert!(StoreUrl::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "mysql://x",
            "postgres://jobd@127.0.0.1:notaport/jobd",
            "postgres://jobd@h/db?nosuchkey=1",
            "/var/lib/jobd.db",
        ] {
            let e = StoreUrl::parse(bad).expect_err(bad);
            assert!(matches!(e, StoreError::Config(_)), "{bad}: {e}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        let u = StoreUrl::parse("postgres://jobd:s3cret@host:5432/db?application_name=x")
            .expect("valid");
        assert_eq!(
            u.masked(),
            "postgres://jobd:****@host:5432/db?application_name=x"
        );
        assert!(!format!("{u:?} {u}").contains("s3cret"));
        let u = StoreUrl::parse("postgres://jobd@host/db?password=s3cret&sslmode=disable")
            .expect("valid");
        assert_eq!(
            u.masked(),
            "postgres://jobd@host/db?password=****&sslmode=disable"
        );
        let e = StoreUrl::parse("postgres://jobd:s3cret@host:x/db").expect_err("bad port");
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }
}
