//! The cargo format's URL space under `/cargo/{repo}/`: the sparse index under `index/`
//! (`sparse+http(s)://HOST/cargo/REPO/index/`), the web API under `api/v1/` (the `api` base
//! `config.json` names is `/cargo/REPO`), downloads at the `dl` base
//! `/cargo/REPO/api/v1/crates`, and the page cargo's `login_url` names.

use axum::http::Method;

/// A request of the cargo registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `index/config.json`.
    Config,
    /// `index/{prefix…}/{name}`: the raw path below `index/`.
    Index(String),
    /// `api/v1/crates/new`.
    Publish,
    /// `api/v1/crates/{name}/{version}/download`.
    Download(String, String),
    /// `api/v1/crates/{name}/{version}/yank` (DELETE yanks).
    Yank(String, String),
    /// `api/v1/crates/{name}/{version}/unyank` (PUT).
    Unyank(String, String),
    /// `api/v1/crates/{name}/owners`.
    Owners(String),
    /// `api/v1/crates?q=…`.
    Search,
    /// `me`: where a person gets a token (cargo's `login_url`).
    Me,
    Unknown,
}

impl Route {
    /// The route of `rest`, the path after `/cargo/{repo}/`.
    pub fn parse(rest: &str) -> Route {
        if let Some(index) = rest.strip_prefix("index/") {
            return match index {
                "config.json" => Route::Config,
                "" => Route::Unknown,
                path => Route::Index(path.to_string()),
            };
        }
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let owned = |s: &&str| s.to_string();
        match segments.as_slice() {
            ["me"] => Route::Me,
            ["api", "v1", "crates"] => Route::Search,
            ["api", "v1", "crates", "new"] => Route::Publish,
            ["api", "v1", "crates", name, "owners"] => Route::Owners(owned(name)),
            ["api", "v1", "crates", name, vers, "download"] => {
                Route::Download(owned(name), owned(vers))
            }
            ["api", "v1", "crates", name, vers, "yank"] => Route::Yank(owned(name), owned(vers)),
            ["api", "v1", "crates", name, vers, "unyank"] => {
                Route::Unyank(owned(name), owned(vers))
            }
            _ => Route::Unknown,
        }
    }

    /// The metrics label of a request to this route (never a crate name).
    pub fn label(&self, method: &Method) -> &'static str {
        match self {
            Route::Config => "config",
            Route::Index(_) => "index",
            Route::Publish => "publish",
            Route::Download(..) => "download",
            Route::Yank(..) => "yank",
            Route::Unyank(..) => "unyank",
            Route::Owners(_) if *method == Method::GET => "owners",
            Route::Owners(_) => "owners_change",
            Route::Search => "search",
            Route::Me => "me",
            Route::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_space_parses() {
        assert_eq!(Route::parse("index/config.json"), Route::Config);
        assert_eq!(
            Route::parse("index/ar/ca/arca-hello"),
            Route::Index("ar/ca/arca-hello".into())
        );
        assert_eq!(Route::parse("api/v1/crates/new"), Route::Publish);
        assert_eq!(
            Route::parse("api/v1/crates/hello/0.1.0/download"),
            Route::Download("hello".into(), "0.1.0".into())
        );
        assert_eq!(
            Route::parse("api/v1/crates/hello/0.1.0/yank"),
            Route::Yank("hello".into(), "0.1.0".into())
        );
        assert_eq!(
            Route::parse("api/v1/crates/hello/0.1.0/unyank"),
            Route::Unyank("hello".into(), "0.1.0".into())
        );
        assert_eq!(
            Route::parse("api/v1/crates/hello/owners"),
            Route::Owners("hello".into())
        );
        assert_eq!(Route::parse("api/v1/crates"), Route::Search);
        assert_eq!(Route::parse("me"), Route::Me);
        assert_eq!(Route::parse("index/"), Route::Unknown);
        assert_eq!(Route::parse("api/v2/crates/new"), Route::Unknown);
    }
}
