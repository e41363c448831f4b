//! The NuGet format's URL space under `/nuget/{repo}/` (the feed is
//! `/nuget/{repo}/v3/index.json`). Ids and versions in paths are matched ignoring case.

use axum::http::Method;

/// A request of a NuGet v3 feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `v3/index.json`.
    ServiceIndex,
    /// `api/v2/package[/]` (PUT: push).
    Publish,
    /// `api/v2/package/{id}/{version}` (DELETE: unlist; POST: relist).
    Listing(String, String),
    /// `v3/package/{id}/index.json`.
    Versions(String),
    /// `v3/package/{id}/{version}/{file}` (`{id}.{version}.nupkg` or `{id}.nuspec`).
    Content(String, String, String),
    /// `v3/registration/{id}/index.json`.
    Registration(String),
    /// `v3/registration/{id}/page/{lower}/{upper}.json`.
    RegistrationPage(String, String, String),
    /// `v3/registration/{id}/{version}.json`.
    RegistrationLeaf(String, String),
    /// `v3/search`.
    Search,
    /// `v3/autocomplete`.
    Autocomplete,
    Unknown,
}

impl Route {
    /// The route of `rest`, the path after `/nuget/{repo}/`.
    pub fn parse(rest: &str) -> Route {
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let own = |s: &&str| s.to_ascii_lowercase();
        match segments.as_slice() {
            ["v3", "index.json"] => Route::ServiceIndex,
            ["api", "v2", "package"] => Route::Publish,
            ["api", "v2", "package", id, version] => Route::Listing(own(id), own(version)),
            ["v3", "package", id, "index.json"] => Route::Versions(own(id)),
            ["v3", "package", id, version, file] => {
                Route::Content(own(id), own(version), own(file))
            }
            ["v3", "registration", id, "index.json"] => Route::Registration(own(id)),
            ["v3", "registration", id, "page", lower, upper] => {
                upper.strip_suffix(".json").map_or(Route::Unknown, |upper| {
                    Route::RegistrationPage(own(id), own(lower), upper.to_ascii_lowercase())
                })
            }
            ["v3", "registration", id, leaf] => {
                leaf.strip_suffix(".json").map_or(Route::Unknown, |v| {
                    Route::RegistrationLeaf(own(id), v.to_ascii_lowercase())
                })
            }
            ["v3", "search"] => Route::Search,
            ["v3", "autocomplete"] => Route::Autocomplete,
            _ => Route::Unknown,
        }
    }

    /// The metrics label of a request to this route (never an id).
    pub fn label(&self, method: &Method) -> &'static str {
        match self {
            Route::ServiceIndex => "service_index",
            Route::Publish => "push",
            Route::Listing(..) if *method == Method::DELETE => "unlist",
            Route::Listing(..) => "relist",
            Route::Versions(_) => "versions",
            Route::Content(..) => "content",
            Route::Registration(_) | Route::RegistrationPage(..) | Route::RegistrationLeaf(..) => {
                "registration"
            }
            Route::Search => "search",
            Route::Autocomplete => "autocomplete",
            Route::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_space_parses() {
        assert_eq!(Route::parse("v3/index.json"), Route::ServiceIndex);
        assert_eq!(Route::parse("api/v2/package/"), Route::Publish);
        assert_eq!(
            Route::parse("api/v2/package/Acme.Hello/1.0.0"),
            Route::Listing("acme.hello".into(), "1.0.0".into())
        );
        assert_eq!(
            Route::parse("v3/package/Acme.Hello/index.json"),
            Route::Versions("acme.hello".into())
        );
        assert_eq!(
            Route::parse("v3/package/acme.hello/1.0.0/acme.hello.1.0.0.nupkg"),
            Route::Content(
                "acme.hello".into(),
                "1.0.0".into(),
                "acme.hello.1.0.0.nupkg".into()
            )
        );
        assert_eq!(
            Route::parse("v3/registration/acme.hello/index.json"),
            Route::Registration("acme.hello".into())
        );
        assert_eq!(
            Route::parse("v3/registration/acme.hello/page/1.0.0/2.0.0.json"),
            Route::RegistrationPage("acme.hello".into(), "1.0.0".into(), "2.0.0".into())
        );
        assert_eq!(
            Route::parse("v3/registration/acme.hello/1.0.0.json"),
            Route::RegistrationLeaf("acme.hello".into(), "1.0.0".into())
        );
        assert_eq!(Route::parse("v3/search"), Route::Search);
        assert_eq!(Route::parse("v2/other"), Route::Unknown);
    }
}
