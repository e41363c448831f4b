//! The Helm format's URL space under `/helm/{repo}/` (the URL `helm repo add` is given).

use axum::http::Method;

/// A request of a chart repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `index.yaml`.
    Index,
    /// `charts/{name}-{version}.tgz`, or the same at the top (the `PUT` of Nexus and
    /// Artifactory clients).
    Archive(String),
    /// The archive's `.prov` (the archive's file name).
    Prov(String),
    /// `api/charts`: the chartmuseum listing (GET) and upload (POST).
    Charts,
    /// `api/charts/{name}`.
    Chart(String),
    /// `api/charts/{name}/{version}`.
    ChartVersion(String, String),
    /// `api/prov`: a provenance upload.
    ProvUpload,
    Unknown,
}

impl Route {
    /// The route of `rest`, the path after `/helm/{repo}/`.
    pub fn parse(rest: &str) -> Route {
        let file = |f: &str| -> Route {
            if f.contains('/') || f.starts_with('.') {
                return Route::Unknown;
            }
            if let Some(archive) = f.strip_suffix(".prov").filter(|a| a.ends_with(".tgz")) {
                return Route::Prov(archive.to_string());
            }
            if f.ends_with(".tgz") {
                return Route::Archive(f.to_string());
            }
            Route::Unknown
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        match segments.as_slice() {
            ["index.yaml"] => Route::Index,
            ["api", "charts"] => Route::Charts,
            ["api", "prov"] => Route::ProvUpload,
            ["api", "charts", name] => Route::Chart(name.to_string()),
            ["api", "charts", name, version] => {
                Route::ChartVersion(name.to_string(), version.to_string())
            }
            ["charts", f] => file(f),
            [f] => file(f),
            _ => Route::Unknown,
        }
    }

    /// The metrics label of a request to this route (never a chart name).
    pub fn label(&self, method: &Method) -> &'static str {
        let write = !matches!(*method, Method::GET | Method::HEAD);
        match self {
            Route::Index => "index",
            Route::Archive(_) if write => "upload",
            Route::Archive(_) => "chart",
            Route::Prov(_) if write => "prov_upload",
            Route::Prov(_) => "prov",
            Route::Charts if write => "upload",
            Route::Charts | Route::Chart(_) | Route::ChartVersion(..) => "api",
            Route::ProvUpload => "prov_upload",
            Route::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_space_parses() {
        assert_eq!(Route::parse("index.yaml"), Route::Index);
        assert_eq!(
            Route::parse("charts/web-0.1.0.tgz"),
            Route::Archive("web-0.1.0.tgz".into())
        );
        assert_eq!(
            Route::parse("web-0.1.0.tgz"),
            Route::Archive("web-0.1.0.tgz".into())
        );
        assert_eq!(
            Route::parse("charts/web-0.1.0.tgz.prov"),
            Route::Prov("web-0.1.0.tgz".into())
        );
        assert_eq!(Route::parse("api/charts"), Route::Charts);
        assert_eq!(Route::parse("api/charts/web"), Route::Chart("web".into()));
        assert_eq!(
            Route::parse("api/charts/web/0.1.0"),
            Route::ChartVersion("web".into(), "0.1.0".into())
        );
        assert_eq!(Route::parse("api/prov"), Route::ProvUpload);
        assert_eq!(Route::parse("charts/../index.yaml"), Route::Unknown);
        assert_eq!(Route::parse("charts/.tgz"), Route::Unknown);
        assert_eq!(Route::parse("other"), Route::Unknown);
    }
}
