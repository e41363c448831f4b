//! The simple repository API's documents, built from the state machine on every request:
//! PEP 503 HTML and PEP 691 JSON (api-version 1.1, PEP 700 fields), with PEP 658/714 core
//! metadata hashes and PEP 592 yanks; and the content negotiation between them.

use serde_json::json;

use super::model::DistFile;
use super::names::version_key;

/// The API version the documents declare (PEP 700).
pub const API_VERSION: &str = "1.1";
pub const JSON: &str = "application/vnd.pypi.simple.v1+json";
pub const HTML_V1: &str = "application/vnd.pypi.simple.v1+html";
pub const HTML: &str = "text/html";

/// The document form a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    Json,
    HtmlV1,
    Html,
}

impl Form {
    pub fn content_type(self) -> &'static str {
        match self {
            Form::Json => JSON,
            Form::HtmlV1 => HTML_V1,
            Form::Html => "text/html; charset=utf-8",
        }
    }
}

/// Picks the form from every `Accept` value (PEP 691): the highest quality the client gives
/// a form this server speaks, JSON first among equals; no `Accept` is HTML; `None` when the
/// client accepts none of them (`406`). `?format=` overrides it.
pub fn negotiate<'a>(accept: impl Iterator<Item = &'a str>, format: Option<&str>) -> Option<Form> {
    if let Some(format) = format {
        return match format {
            JSON => Some(Form::Json),
            HTML_V1 => Some(Form::HtmlV1),
            HTML => Some(Form::Html),
            _ => None,
        };
    }
    let mut best: Option<(f32, Form)> = None;
    let mut any = false;
    for range in accept.flat_map(|value| value.split(',')) {
        let mut params = range.split(';').map(str::trim);
        let media = params.next().unwrap_or_default().to_ascii_lowercase();
        if media.is_empty() {
            continue;
        }
        any = true;
        let q = params
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        let form = match media.as_str() {
            JSON => Form::Json,
            HTML_V1 => Form::HtmlV1,
            HTML | "text/*" | "*/*" => Form::Html,
            _ => continue,
        };
        if q <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((best_q, best_form)) => {
                q > best_q || (q == best_q && rank(form) < rank(best_form))
            }
        };
        if better {
            best = Some((q, form));
        }
    }
    match best {
        Some((_, form)) => Some(form),
        None if !any => Some(Form::Html),
        None => None,
    }
}

fn rank(form: Form) -> u8 {
    match form {
        Form::Json => 0,
        Form::HtmlV1 => 1,
        Form::Html => 2,
    }
}

/// Escapes text for HTML content and attribute values.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// The project list (`/simple/`): `(normal name, display name)` pairs.
pub fn project_list(form: Form, projects: &[(String, String)]) -> Vec<u8> {
    match form {
        Form::Json => {
            let projects: Vec<_> = projects
                .iter()
                .map(|(_, name)| json!({ "name": name }))
                .collect();
            serde_json::to_vec(&json!({"meta": {"api-version": API_VERSION}, "projects": projects}))
                .unwrap_or_default()
        }
        Form::HtmlV1 | Form::Html => {
            let mut html = format!(
                "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n<title>Simple index</title>\n</head>\n<body>\n"
            );
            for (normalized, name) in projects {
                html.push_str(&format!(
                    "<a href=\"{}/\">{}</a>\n",
                    escape(normalized),
                    escape(name)
                ));
            }
            html.push_str("</body>\n</html>\n");
            html.into_bytes()
        }
    }
}

/// What a version keeps unencoded in a URL path (every character a PEP 440 version has).
const VERSION_SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'.')
    .remove(b'-')
    .remove(b'_')
    .remove(b'+')
    .remove(b'!');

/// The URL of a file (its `.metadata` sidecar is this plus `.metadata`).
pub fn file_url(files_base: &str, file: &DistFile) -> String {
    format!(
        "{files_base}/{}/{}",
        percent_encoding::utf8_percent_encode(&file.version, VERSION_SEGMENT),
        file.filename
    )
}

/// A project's page: every file, oldest version first. `files_base` is the absolute URL files
/// of this project live under.
pub fn project_page(form: Form, normalized: &str, files_base: &str, files: &[DistFile]) -> Vec<u8> {
    let mut files: Vec<&DistFile> = files.iter().collect();
    files.sort_by_cached_key(|f| (version_key(&f.version), f.filename.clone()));
    match form {
        Form::Json => {
            let mut versions: Vec<&str> = files.iter().map(|f| f.version.as_str()).collect();
            versions.dedup();
            let entries: Vec<_> = files
                .iter()
                .map(|file| {
                    let mut entry = json!({
                        "filename": file.filename,
                        "url": file_url(files_base, file),
                        "hashes": {"sha256": file.sha256.to_hex()},
                        "requires-python": file.requires_python,
                        "core-metadata": {"sha256": file.metadata.sha256.to_hex()},
                        "dist-info-metadata": {"sha256": file.metadata.sha256.to_hex()},
                        "size": file.size,
                        "upload-time": upload_time(file.uploaded_at_ms),
                        "yanked": match &file.yanked {
                            None => json!(false),
                            Some(reason) if reason.is_empty() => json!(true),
                            Some(reason) => json!(reason),
                        },
                    });
                    if file.requires_python.is_none() {
                        if let Some(object) = entry.as_object_mut() {
                            object.remove("requires-python");
                        }
                    }
                    entry
                })
                .collect();
            serde_json::to_vec(&json!({
                "meta": {"api-version": API_VERSION},
                "name": normalized,
                "versions": versions,
                "files": entries,
            }))
            .unwrap_or_default()
        }
        Form::HtmlV1 | Form::Html => {
            let title = escape(normalized);
            let mut html = format!(
                "<!DOCTYPE html>\n<html>\n<head>\n<meta name=\"pypi:repository-version\" content=\"{API_VERSION}\">\n<title>Links for {title}</title>\n</head>\n<body>\n<h1>Links for {title}</h1>\n"
            );
            for file in files {
                let mut anchor = format!(
                    "<a href=\"{}#sha256={}\"",
                    escape(&file_url(files_base, file)),
                    file.sha256.to_hex()
                );
                if let Some(requires) = &file.requires_python {
                    anchor.push_str(&format!(" data-requires-python=\"{}\"", escape(requires)));
                }
                let metadata = file.metadata.sha256.to_hex();
                anchor.push_str(&format!(
                    " data-core-metadata=\"sha256={metadata}\" data-dist-info-metadata=\"sha256={metadata}\""
                ));
                if let Some(reason) = &file.yanked {
                    anchor.push_str(&format!(" data-yanked=\"{}\"", escape(reason)));
                }
                anchor.push_str(&format!(">{}</a><br>\n", escape(&file.filename)));
                html.push_str(&anchor);
            }
            html.push_str("</body>\n</html>\n");
            html.into_bytes()
        }
    }
}

/// PEP 700's `upload-time`: ISO 8601 UTC with microseconds.
fn upload_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_as_pep_691_says() {
        let pip = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html; q=0.1, text/html; q=0.01";
        assert_eq!(negotiate([pip].into_iter(), None), Some(Form::Json));
        assert_eq!(negotiate(std::iter::empty(), None), Some(Form::Html));
        assert_eq!(negotiate(["*/*"].into_iter(), None), Some(Form::Html));
        assert_eq!(
            negotiate(
                ["text/html", "application/vnd.pypi.simple.v1+html"].into_iter(),
                None
            ),
            Some(Form::HtmlV1)
        );
        assert_eq!(
            negotiate(
                ["application/vnd.pypi.simple.v1+json;q=0.2, text/html"].into_iter(),
                None
            ),
            Some(Form::Html)
        );
        assert_eq!(negotiate(["application/xml"].into_iter(), None), None);
        assert_eq!(negotiate(["text/html;q=0"].into_iter(), None), None);
        assert_eq!(
            negotiate(["text/html"].into_iter(), Some(JSON)),
            Some(Form::Json)
        );
        assert_eq!(negotiate(std::iter::empty(), Some("yaml")), None);
    }

    #[test]
    fn escapes_html() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#x27;"
        );
    }
}
