//! The npm format's URL space under `/npm/{repo}/`, parsed from the raw (still
//! percent-encoded) path: npm writes scoped names as one segment (`@scope%2fname`, also
//! `%2F`) in packument and dist-tag URLs and as two (`@scope/name`) in tarball URLs.

use axum::http::Method;
use percent_encoding::percent_decode_str;

/// A request of the npm API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Whoami,
    /// `POST /-/v1/login`: start a web login.
    LoginStart,
    /// `GET|POST /-/v1/login/{session}`: the page a person approves the login on.
    LoginPage(String),
    /// `GET /-/v1/done/{session}`: npm polls it until the login is approved.
    LoginDone(String),
    /// `PUT /-/user/org.couchdb.user:{name}`: the legacy login.
    LegacyUser(String),
    /// `DELETE /-/user/token/{token}`: `npm logout`.
    Logout(String),
    /// `POST /-/npm/v1/security/advisories/bulk` and `…/audits/quick`.
    Audit,
    Search,
    DistTags(String),
    DistTag(String, String),
    Package(String),
    PackageRev(String, String),
    Tarball(String, String),
    TarballRev(String, String, String),
    Unknown,
}

fn decode(segment: &str) -> Option<String> {
    percent_decode_str(segment)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// Splits a package name off the front of `segments`: `@scope%2fname`, `@scope/name` or
/// `name`.
fn package<'a>(segments: &'a [&'a str]) -> Option<(String, &'a [&'a str])> {
    let first = decode(segments.first()?)?;
    if first.starts_with('@') && !first.contains('/') {
        let name = decode(segments.get(1)?)?;
        return Some((format!("{first}/{name}"), &segments[2..]));
    }
    Some((first, &segments[1..]))
}

impl Route {
    /// The route of `rest`, the raw path after `/npm/{repo}/`.
    pub fn parse(rest: &str) -> Route {
        let segments: Vec<&str> = rest.split('/').collect();
        let owned = |s: &str| decode(s).unwrap_or_default();
        match segments.as_slice() {
            ["-", "ping"] => Route::Ping,
            ["-", "whoami"] => Route::Whoami,
            ["-", "v1", "login"] => Route::LoginStart,
            ["-", "v1", "login", id] => Route::LoginPage(owned(id)),
            ["-", "v1", "done", id] => Route::LoginDone(owned(id)),
            ["-", "v1", "search"] => Route::Search,
            ["-", "user", "token", token] => Route::Logout(owned(token)),
            ["-", "user", user] => match owned(user).strip_prefix("org.couchdb.user:") {
                Some(name) => Route::LegacyUser(name.to_string()),
                None => Route::Unknown,
            },
            ["-", "npm", "v1", "security", "advisories", "bulk"]
            | ["-", "npm", "v1", "security", "audits", "quick"] => Route::Audit,
            ["-", "package", rest @ ..] => match package(rest) {
                Some((name, ["dist-tags"])) => Route::DistTags(name),
                Some((name, ["dist-tags", tag])) => Route::DistTag(name, owned(tag)),
                _ => Route::Unknown,
            },
            ["-", ..] | [""] | [] => Route::Unknown,
            _ => match package(&segments) {
                Some((name, [])) => Route::Package(name),
                Some((name, ["-rev", rev])) => Route::PackageRev(name, owned(rev)),
                Some((name, ["-", file])) => Route::Tarball(name, owned(file)),
                Some((name, ["-", file, "-rev", rev])) => {
                    Route::TarballRev(name, owned(file), owned(rev))
                }
                _ => Route::Unknown,
            },
        }
    }

    /// The metric label of a request: its route, never its names.
    pub fn label(&self, method: &Method) -> &'static str {
        match (self, method) {
            (Route::Ping, _) => "ping",
            (Route::Whoami, _) => "whoami",
            (Route::LoginStart | Route::LoginPage(_) | Route::LoginDone(_), _) => "login_web",
            (Route::LegacyUser(_), _) => "login_legacy",
            (Route::Logout(_), _) => "logout",
            (Route::Audit, _) => "audit",
            (Route::Search, _) => "search",
            (Route::DistTags(_) | Route::DistTag(..), _) => "dist_tags",
            (Route::Package(_), &Method::PUT) => "publish",
            (Route::Package(_), &Method::DELETE) | (Route::PackageRev(..), _) => "unpublish",
            (Route::Package(_), _) => "packument",
            (Route::Tarball(..), _) => "tarball",
            (Route::TarballRev(..), _) => "unpublish",
            (Route::Unknown, _) => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_scoped_name_routes_the_same() {
        let scoped = || "@acme/hello".to_string();
        for path in [
            "@acme%2fhello",
            "@acme%2Fhello",
            "@acme/hello",
            "%40acme%2fhello",
        ] {
            assert_eq!(Route::parse(path), Route::Package(scoped()), "{path}");
        }
        assert_eq!(
            Route::parse("@acme/hello/-/hello-1.0.0.tgz"),
            Route::Tarball(scoped(), "hello-1.0.0.tgz".into())
        );
        assert_eq!(
            Route::parse("@acme%2fhello/-rev/3-abc"),
            Route::PackageRev(scoped(), "3-abc".into())
        );
        assert_eq!(
            Route::parse("@acme%2fhello/-/hello-1.0.0.tgz/-rev/4-abc"),
            Route::TarballRev(scoped(), "hello-1.0.0.tgz".into(), "4-abc".into())
        );
        assert_eq!(
            Route::parse("-/package/@acme%2fhello/dist-tags/beta"),
            Route::DistTag(scoped(), "beta".into())
        );
        assert_eq!(
            Route::parse("hello/-/hello-1.0.0.tgz"),
            Route::Tarball("hello".into(), "hello-1.0.0.tgz".into())
        );
    }

    #[test]
    fn the_registry_endpoints_route() {
        assert_eq!(Route::parse("-/ping"), Route::Ping);
        assert_eq!(Route::parse("-/whoami"), Route::Whoami);
        assert_eq!(Route::parse("-/v1/login"), Route::LoginStart);
        assert_eq!(
            Route::parse("-/v1/done/abc"),
            Route::LoginDone("abc".into())
        );
        assert_eq!(
            Route::parse("-/user/org.couchdb.user:alice"),
            Route::LegacyUser("alice".into())
        );
        assert_eq!(
            Route::parse("-/user/org.couchdb.user%3Aalice"),
            Route::LegacyUser("alice".into())
        );
        assert_eq!(
            Route::parse("-/npm/v1/security/advisories/bulk"),
            Route::Audit
        );
        for unknown in ["", "-/nope", "a/b/c", "-/user/bob", "@acme", "a/-/x/y"] {
            assert_eq!(Route::parse(unknown), Route::Unknown, "{unknown}");
        }
        assert_eq!(Route::parse("hello").label(&Method::PUT), "publish");
        assert_eq!(Route::parse("hello").label(&Method::GET), "packument");
    }
}
