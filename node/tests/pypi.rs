//! The PyPI format over HTTP, in process: twine's upload as twine sends it (multipart, Basic
//! `__token__`), the simple API's documents and negotiation, core metadata files, yanks,
//! immutability with idempotent retries, a table of bad uploads that store nothing, chunk
//! deduplication across projects, and the package listing `arca ls` reads. The real clients
//! (twine, pip, uv) run against the real binary in `cli/tests/pypi_clients.rs`.

mod support;

use std::io::Write;

use serde_json::Value;
use support::{basic, client_with, sha256_hex, TestNode};

const BOUNDARY: &str = "arcaTestBoundary0123456789";
const JSON: &str = "application/vnd.pypi.simple.v1+json";

/// A wheel of `name` `version` whose METADATA is `metadata` (or the standard one), holding
/// `payload` stored uncompressed (so equal payloads chunk alike).
struct Wheel {
    filename: String,
    bytes: Vec<u8>,
    metadata: Vec<u8>,
}

fn standard_metadata(name: &str, version: &str) -> String {
    format!(
        "Metadata-Version: 2.4\nName: {name}\nVersion: {version}\nSummary: a test package\nRequires-Python: >=3.8\n\nA description.\n"
    )
}

fn wheel_with(name: &str, version: &str, payload: &[u8], metadata: Option<&[u8]>) -> Wheel {
    let dist = name.replace(['-', '.'], "_");
    let standard = standard_metadata(name, version);
    let metadata = metadata.unwrap_or(standard.as_bytes()).to_vec();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file(format!("{dist}/data.bin"), stored)
        .expect("zip entry");
    zip.write_all(payload).expect("zip payload");
    zip.start_file(format!("{dist}/__init__.py"), stored)
        .expect("zip entry");
    zip.write_all(b"VALUE = 1\n").expect("zip write");
    let info = format!("{dist}-{version}.dist-info");
    zip.start_file(format!("{info}/METADATA"), stored)
        .expect("zip entry");
    zip.write_all(&metadata).expect("zip write");
    zip.start_file(format!("{info}/WHEEL"), stored)
        .expect("zip entry");
    zip.write_all(
        b"Wheel-Version: 1.0\nGenerator: arca-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    )
    .expect("zip write");
    let bytes = zip.finish().expect("zip finish").into_inner();
    Wheel {
        filename: format!("{dist}-{version}-py3-none-any.whl"),
        bytes,
        metadata,
    }
}

fn wheel(name: &str, version: &str) -> Wheel {
    wheel_with(name, version, format!("{name} {version}").as_bytes(), None)
}

/// An sdist (`.tar.gz`) with `<name>-<version>/PKG-INFO`.
fn sdist(name: &str, version: &str) -> (String, Vec<u8>) {
    let stem = format!("{name}-{version}");
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (path, data) in [
        (format!("{stem}/setup.py"), b"print('hi')\n".to_vec()),
        (
            format!("{stem}/PKG-INFO"),
            standard_metadata(name, version).into_bytes(),
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, path, data.as_slice())
            .expect("tar entry");
    }
    let bytes = tar
        .into_inner()
        .expect("tar finish")
        .finish()
        .expect("gzip finish");
    (format!("{stem}.tar.gz"), bytes)
}

/// A multipart body as twine 7 sends it: the fields, then the file as `content`.
fn multipart(fields: &[(&str, String)], file: Option<(&str, &[u8])>) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some((filename, data)) = file {
        body.extend_from_slice(
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"content\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n")
                .as_bytes(),
        );
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
    body
}

fn form(name: &str, version: &str, filetype: &str, data: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        (":action", "file_upload".into()),
        ("protocol_version", "1".into()),
        ("name", name.into()),
        ("version", version.into()),
        ("filetype", filetype.into()),
        ("pyversion", "py3".into()),
        ("metadata_version", "2.4".into()),
        ("sha256_digest", sha256_hex(data)),
    ]
}

struct Pypi {
    node: TestNode,
    /// `Basic __token__:<write token>`, as twine sends it.
    uploader: reqwest::Client,
}

impl Pypi {
    async fn start() -> Self {
        let node = TestNode::start().await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": "py", "format": "pypi"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201);
        let (_, token) = node.create_token(&["py:write"]).await;
        let uploader = client_with(&basic("__token__", &token));
        Self { node, uploader }
    }

    async fn upload_body(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let response = self
            .uploader
            .post(self.node.url(path))
            .header(
                "content-type",
                format!("multipart/form-data; boundary={BOUNDARY}"),
            )
            .body(body)
            .send()
            .await
            .expect("upload");
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            content_type.starts_with("text/plain"),
            "PyPI answers in text, not {content_type:?} ({status})"
        );
        (status, response.text().await.unwrap_or_default())
    }

    async fn upload(
        &self,
        name: &str,
        version: &str,
        filename: &str,
        data: &[u8],
    ) -> (u16, String) {
        let filetype = if filename.ends_with(".whl") {
            "bdist_wheel"
        } else {
            "sdist"
        };
        let body = multipart(&form(name, version, filetype, data), Some((filename, data)));
        self.upload_body("/pypi/py/", body).await
    }

    async fn page(&self, project: &str) -> Value {
        let response = self
            .node
            .http
            .get(self.node.url(&format!("/pypi/py/simple/{project}/")))
            .header("accept", JSON)
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), 200, "page of {project}");
        response.json().await.expect("json")
    }
}

#[tokio::test]
async fn an_upload_is_served_as_pep_691_json_and_pep_503_html_with_its_core_metadata() {
    let pypi = Pypi::start().await;
    let wheel = wheel("Arca.Hello", "0.1.0");
    let (status, body) = pypi
        .upload("Arca.Hello", "0.1.0", &wheel.filename, &wheel.bytes)
        .await;
    assert_eq!(status, 200, "{body}");
    let (sdist_name, sdist_bytes) = sdist("arca-hello", "0.1.0");
    // Without the trailing slash too: twine must never meet a redirect.
    let body = multipart(
        &form("arca-hello", "0.1.0", "sdist", &sdist_bytes),
        Some((&sdist_name, &sdist_bytes)),
    );
    let (status, text) = pypi.upload_body("/pypi/py", body).await;
    assert_eq!(status, 200, "{text}");

    // JSON (what pip asks for first), read right after the upload.
    let page = pypi.page("arca-hello").await;
    assert_eq!(page["meta"]["api-version"], "1.1");
    assert_eq!(page["name"], "arca-hello");
    assert_eq!(page["versions"], serde_json::json!(["0.1.0"]));
    let files = page["files"].as_array().expect("files");
    assert_eq!(files.len(), 2);
    let entry = files
        .iter()
        .find(|f| f["filename"] == wheel.filename.as_str())
        .expect("the wheel");
    assert_eq!(entry["hashes"]["sha256"], sha256_hex(&wheel.bytes));
    assert_eq!(entry["size"], wheel.bytes.len());
    assert_eq!(entry["requires-python"], ">=3.8");
    assert_eq!(entry["yanked"], false);
    assert_eq!(
        entry["core-metadata"]["sha256"],
        sha256_hex(&wheel.metadata),
        "PEP 658: the hash of the metadata file, not of the wheel"
    );
    let url = entry["url"].as_str().expect("url");
    assert!(url.starts_with(&pypi.node.base), "absolute URL {url}");

    // The file (whole and by range) and its metadata file, byte for byte.
    let file = pypi.node.http.get(url).send().await.expect("file");
    assert_eq!(file.status(), 200);
    assert_eq!(
        file.headers()["etag"],
        format!("\"{}\"", sha256_hex(&wheel.bytes)).as_str()
    );
    assert_eq!(
        file.bytes().await.expect("bytes").as_ref(),
        wheel.bytes.as_slice()
    );
    let tail = pypi
        .node
        .http
        .get(url)
        .header("range", "bytes=-22")
        .send()
        .await
        .expect("range");
    assert_eq!(tail.status(), 206);
    assert_eq!(
        tail.bytes().await.expect("bytes").as_ref(),
        &wheel.bytes[wheel.bytes.len() - 22..]
    );
    let metadata = pypi
        .node
        .http
        .get(format!("{url}.metadata"))
        .send()
        .await
        .expect("metadata");
    assert_eq!(metadata.status(), 200);
    assert_eq!(
        metadata.bytes().await.expect("bytes").as_ref(),
        wheel.metadata.as_slice()
    );
    let sdist_entry = files
        .iter()
        .find(|f| f["filename"] == sdist_name.as_str())
        .expect("the sdist");
    let pkg_info = pypi
        .node
        .http
        .get(format!(
            "{}.metadata",
            sdist_entry["url"].as_str().expect("url")
        ))
        .send()
        .await
        .expect("PKG-INFO");
    assert_eq!(
        pkg_info.text().await.expect("text"),
        standard_metadata("arca-hello", "0.1.0")
    );

    // HTML, negotiated, with the same validators; Vary: Accept on both.
    let html = pypi
        .node
        .http
        .get(pypi.node.url("/pypi/py/simple/arca-hello/"))
        .header("accept", "text/html")
        .send()
        .await
        .expect("html");
    assert_eq!(html.headers()["vary"], "Accept");
    assert!(html.headers()["content-type"]
        .to_str()
        .unwrap_or_default()
        .starts_with("text/html"));
    let etag = html.headers()["etag"].clone();
    let text = html.text().await.expect("text");
    assert!(text.contains("<meta name=\"pypi:repository-version\" content=\"1.1\">"));
    assert!(text.contains(&format!("#sha256={}", sha256_hex(&wheel.bytes))));
    assert!(text.contains(&format!(
        "data-core-metadata=\"sha256={}\"",
        sha256_hex(&wheel.metadata)
    )));
    assert!(text.contains("data-requires-python=\"&gt;=3.8\""));
    let again = pypi
        .node
        .http
        .get(pypi.node.url("/pypi/py/simple/arca-hello/"))
        .header("accept", "text/html")
        .header("if-none-match", etag)
        .send()
        .await
        .expect("conditional");
    assert_eq!(again.status(), 304);
    let refused = pypi
        .node
        .http
        .get(pypi.node.url("/pypi/py/simple/arca-hello/"))
        .header("accept", "application/xml")
        .send()
        .await
        .expect("406");
    assert_eq!(refused.status(), 406);

    // A name not in normal form is sent to the normal one; an unknown project is 404.
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(
            [(
                reqwest::header::AUTHORIZATION,
                pypi.node.admin_auth().parse().expect("header"),
            )]
            .into_iter()
            .collect(),
        )
        .build()
        .expect("client");
    let moved = client
        .get(pypi.node.url("/pypi/py/simple/Arca.Hello/"))
        .send()
        .await
        .expect("301");
    assert_eq!(moved.status(), 301);
    assert!(moved.headers()["location"]
        .to_str()
        .unwrap_or_default()
        .ends_with("/pypi/py/simple/arca-hello/"));
    let missing = pypi.node.get("/pypi/py/simple/nothing-here/").await;
    assert_eq!(missing.status(), 404);

    // The project list, in both forms.
    let list: Value = pypi
        .node
        .http
        .get(pypi.node.url("/pypi/py/simple/"))
        .header("accept", JSON)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    assert_eq!(
        list["projects"],
        serde_json::json!([{"name": "Arca.Hello"}])
    );

    // What `arca ls` and `arca stat` read.
    let packages = pypi.node.json("/api/v1/repos/py/packages").await;
    assert_eq!(packages["packages"][0]["name"], "Arca.Hello");
    assert_eq!(packages["packages"][0]["latest"], "0.1.0");
    let detail = pypi.node.json("/api/v1/repos/py/packages/arca-hello").await;
    assert_eq!(
        detail["versions"][0]["files"].as_array().map(Vec::len),
        Some(2)
    );

    // Metrics per route.
    assert!(pypi.node.metric("arca_pypi_requests_total").await >= 8.0);
}

#[tokio::test]
async fn a_retried_upload_succeeds_and_different_bytes_under_a_released_name_are_refused() {
    let pypi = Pypi::start().await;
    let first = wheel("retry", "1.0");
    let (status, _) = pypi
        .upload("retry", "1.0", &first.filename, &first.bytes)
        .await;
    assert_eq!(status, 200);
    let (status, body) = pypi
        .upload("retry", "1.0", &first.filename, &first.bytes)
        .await;
    assert_eq!(status, 200, "an identical retry succeeds: {body}");
    let other = wheel_with("retry", "1.0", b"other bytes", None);
    assert_eq!(other.filename, first.filename);
    let (status, body) = pypi
        .upload("retry", "1.0", &other.filename, &other.bytes)
        .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("File already exists"), "{body}");
    let page = pypi.page("retry").await;
    assert_eq!(
        page["files"][0]["hashes"]["sha256"],
        sha256_hex(&first.bytes)
    );
    assert_eq!(page["files"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn a_yanked_version_is_marked_in_both_forms_and_can_be_restored() {
    let pypi = Pypi::start().await;
    let wheel = wheel("yanky", "2.0");
    pypi.upload("yanky", "2.0", &wheel.filename, &wheel.bytes)
        .await;
    let yank = |body: Value| {
        let node = &pypi.node;
        async move {
            node.http
                .post(node.url("/pypi/py/-/yank"))
                .json(&body)
                .send()
                .await
                .expect("yank")
                .status()
                .as_u16()
        }
    };
    // Yanking needs `delete`: the uploader's `write` is not enough.
    let refused = pypi
        .uploader
        .post(pypi.node.url("/pypi/py/-/yank"))
        .json(&serde_json::json!({"project": "yanky", "version": "2.0"}))
        .send()
        .await
        .expect("yank");
    assert_eq!(refused.status(), 403);
    assert_eq!(
        yank(
            serde_json::json!({"project": "Yanky", "version": "2.0.0", "reason": "broken <build>"})
        )
        .await,
        200
    );
    let page = pypi.page("yanky").await;
    assert_eq!(page["files"][0]["yanked"], "broken <build>");
    let html = pypi
        .node
        .get("/pypi/py/simple/yanky/")
        .await
        .text()
        .await
        .expect("html");
    assert!(
        html.contains("data-yanked=\"broken &lt;build&gt;\""),
        "{html}"
    );
    assert_eq!(
        yank(serde_json::json!({"project": "yanky", "version": "9.9"})).await,
        404
    );
    assert_eq!(
        yank(serde_json::json!({"project": "yanky", "version": "2.0", "yanked": false})).await,
        200
    );
    assert_eq!(pypi.page("yanky").await["files"][0]["yanked"], false);
}

#[tokio::test]
async fn bad_uploads_get_a_precise_status_and_store_nothing() {
    let pypi = Pypi::start().await;
    let good = wheel("good", "1.0");
    let no_metadata = {
        let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        zip.start_file("good/__init__.py", zip::write::SimpleFileOptions::default())
            .expect("entry");
        zip.write_all(b"x").expect("write");
        zip.finish().expect("finish").into_inner()
    };
    let other_name = wheel_with(
        "good",
        "1.0",
        b"x",
        Some(standard_metadata("evil", "1.0").as_bytes()),
    );
    let other_version = wheel_with(
        "good",
        "1.0",
        b"x",
        Some(standard_metadata("good", "3.0").as_bytes()),
    );
    let huge_metadata = {
        let mut text = standard_metadata("good", "1.0");
        text.push_str(&"x".repeat(1 << 20));
        wheel_with("good", "1.0", b"x", Some(text.as_bytes()))
    };
    let mut wrong_digest = form("good", "1.0", "bdist_wheel", &good.bytes);
    wrong_digest[7].1 = sha256_hex(b"something else");
    let mut wrong_blake2 = form("good", "1.0", "bdist_wheel", &good.bytes);
    wrong_blake2.push(("blake2_256_digest", "00".repeat(32)));
    let mut no_action = form("good", "1.0", "bdist_wheel", &good.bytes);
    no_action.remove(0);
    let mut bad_name = form("go od", "1.0", "bdist_wheel", &good.bytes);
    bad_name[7].1 = sha256_hex(&good.bytes);
    let mut wrong_type = form("good", "1.0", "sdist", &good.bytes);
    wrong_type[7].1 = sha256_hex(&good.bytes);
    let fields = |data: &[u8]| form("good", "1.0", "bdist_wheel", data);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "the declared sha256 does not match",
            multipart(&wrong_digest, Some((&good.filename, &good.bytes))),
            400,
        ),
        (
            "the declared blake2_256 does not match",
            multipart(&wrong_blake2, Some((&good.filename, &good.bytes))),
            400,
        ),
        (
            "no :action",
            multipart(&no_action, Some((&good.filename, &good.bytes))),
            400,
        ),
        (
            "an invalid project name",
            multipart(&bad_name, Some((&good.filename, &good.bytes))),
            400,
        ),
        (
            "the filetype does not match the file",
            multipart(&wrong_type, Some((&good.filename, &good.bytes))),
            400,
        ),
        (
            "the file name names another project",
            multipart(
                &fields(&good.bytes),
                Some(("other-1.0-py3-none-any.whl", &good.bytes)),
            ),
            400,
        ),
        (
            "the file name names another version",
            multipart(
                &fields(&good.bytes),
                Some(("good-2.0-py3-none-any.whl", &good.bytes)),
            ),
            400,
        ),
        (
            "a path in the file name",
            multipart(
                &fields(&good.bytes),
                Some(("../good-1.0-py3-none-any.whl", &good.bytes)),
            ),
            400,
        ),
        (
            "not a distribution file",
            multipart(&fields(b"MZ"), Some(("good-1.0.exe", b"MZ"))),
            400,
        ),
        (
            "a wheel that is not a zip",
            multipart(&fields(b"not a zip"), Some((&good.filename, b"not a zip"))),
            400,
        ),
        (
            "a wheel without METADATA",
            multipart(&fields(&no_metadata), Some((&good.filename, &no_metadata))),
            400,
        ),
        (
            "METADATA of another project",
            multipart(
                &fields(&other_name.bytes),
                Some((&good.filename, &other_name.bytes)),
            ),
            400,
        ),
        (
            "METADATA of another version",
            multipart(
                &fields(&other_version.bytes),
                Some((&good.filename, &other_version.bytes)),
            ),
            400,
        ),
        (
            "oversized METADATA",
            multipart(
                &fields(&huge_metadata.bytes),
                Some((&good.filename, &huge_metadata.bytes)),
            ),
            400,
        ),
        ("no file", multipart(&fields(&good.bytes), None), 400),
        (
            "a truncated body",
            multipart(&fields(&good.bytes), Some((&good.filename, &good.bytes)))[..300].to_vec(),
            400,
        ),
    ];
    for (what, body, expected) in cases {
        let (status, text) = pypi.upload_body("/pypi/py/", body).await;
        assert_eq!(status, expected, "{what}: {text}");
        assert!(!text.trim().is_empty(), "{what}: the error says why");
    }
    // Not multipart at all.
    let plain = pypi
        .uploader
        .post(pypi.node.url("/pypi/py/"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .expect("post");
    assert_eq!(plain.status(), 400);
    // Without credentials: 401 with the Basic challenge (so clients send them); with a
    // read-only token: 403.
    let body = multipart(&fields(&good.bytes), Some((&good.filename, &good.bytes)));
    let anonymous = pypi
        .node
        .anon
        .post(pypi.node.url("/pypi/py/"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body.clone())
        .send()
        .await
        .expect("post");
    assert_eq!(anonymous.status(), 401);
    assert!(anonymous.headers()["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .starts_with("Basic"));
    let (_, read_only) = pypi.node.create_token(&["py:read"]).await;
    let reader = client_with(&basic("__token__", &read_only));
    let denied = reader
        .post(pypi.node.url("/pypi/py/"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={BOUNDARY}"),
        )
        .body(body)
        .send()
        .await
        .expect("post");
    assert_eq!(denied.status(), 403);
    // Anonymous reads of a private repository are challenged too (pip and uv retry with
    // credentials on a 401).
    let read = pypi
        .node
        .anon
        .get(pypi.node.url("/pypi/py/simple/"))
        .send()
        .await
        .expect("get");
    assert_eq!(read.status(), 401);

    // Nothing was stored.
    let repo = pypi.node.json("/api/v1/repos/py").await;
    assert_eq!(repo["artifacts"], 0, "{repo}");
    let packages = pypi.node.json("/api/v1/repos/py/packages").await;
    assert_eq!(packages["packages"], serde_json::json!([]));
    // And the good upload still goes through.
    let (status, text) = pypi
        .upload("good", "1.0", &good.filename, &good.bytes)
        .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn the_same_20_mib_wheel_under_two_names_stores_its_chunks_once() {
    let pypi = Pypi::start().await;
    let payload = support::bytes(20 << 20, 7);
    let first = wheel_with("big-one", "1.0", &payload, None);
    let (status, text) = pypi
        .upload("big-one", "1.0", &first.filename, &first.bytes)
        .await;
    assert_eq!(status, 200, "{text}");
    let after_first = pypi.node.stored_chunks();
    let second = wheel_with("big-two", "1.0", &payload, None);
    let (status, text) = pypi
        .upload("big-two", "1.0", &second.filename, &second.bytes)
        .await;
    assert_eq!(status, 200, "{text}");
    let added = pypi.node.stored_chunks() - after_first;
    // 20 MiB at 16 KiB chunks is about 1 300 chunks: the second wheel adds only those around
    // its differing names and its metadata file.
    assert!(
        after_first > 1000,
        "{after_first} chunks for the first wheel"
    );
    assert!(added <= 8, "the second wheel added {added} chunks");
    let repo = pypi.node.json("/api/v1/repos/py").await;
    let logical = repo["logical_bytes"].as_u64().unwrap_or_default();
    let physical = repo["physical_bytes"].as_u64().unwrap_or_default();
    assert!(logical > 40 << 20, "{repo}");
    assert!(physical < 21 << 20, "{repo}");
}

#[tokio::test]
async fn index_urls_use_the_forwarded_host_only_when_told_to_trust_it() {
    for trust in [false, true] {
        let node = TestNode::start_with(|config| config.trust_forwarded_headers = trust).await;
        let created = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": "py", "format": "pypi"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(created.status(), 201);
        let pypi = Pypi {
            uploader: node.http.clone(),
            node,
        };
        let wheel = wheel("fwd", "1.0");
        let (status, text) = pypi
            .upload("fwd", "1.0", &wheel.filename, &wheel.bytes)
            .await;
        assert_eq!(status, 200, "{text}");
        let page: Value = pypi
            .node
            .http
            .get(pypi.node.url("/pypi/py/simple/fwd/"))
            .header("accept", JSON)
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "pypi.example.com")
            .send()
            .await
            .expect("page")
            .json()
            .await
            .expect("json");
        let url = page["files"][0]["url"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let expected = if trust {
            "https://pypi.example.com/pypi/py/files/fwd/1.0/".to_string()
        } else {
            format!("{}/pypi/py/files/fwd/1.0/", pypi.node.base)
        };
        assert!(url.starts_with(&expected), "trust {trust}: {url}");
    }
}
