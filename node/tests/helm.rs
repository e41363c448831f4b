//! The Helm format over HTTP, in process: uploads with chartmuseum's API (raw and multipart,
//! with provenance) and with `PUT`, `index.yaml` read right after (newest semver first, relative
//! URLs, `ETag` and `304`), archives and provenance served byte for byte, immutability with
//! idempotent retries, and a table of bad uploads that store nothing. The real helm runs
//! against the real binary in `cli/tests/helm_clients.rs`.

mod support;

use serde_json::Value;
use support::{client_with, sha256_hex, TestNode};

/// A chart archive `{dir}/Chart.yaml` (with `chart_yaml`), `values.yaml` and a template.
fn archive(dir: &str, chart_yaml: &str) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (path, data) in [
        (format!("{dir}/Chart.yaml"), chart_yaml.as_bytes()),
        (format!("{dir}/values.yaml"), b"replicas: 1\n".as_slice()),
        (
            format!("{dir}/templates/cm.yaml"),
            b"apiVersion: v1\nkind: ConfigMap\n".as_slice(),
        ),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data).expect("tar");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

fn chart(name: &str, version: &str) -> Vec<u8> {
    archive(
        name,
        &format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"1.0\"\ndescription: the {name} chart\ntype: application\n"),
    )
}

/// A provenance file naming `file` with `sha256`, shaped as `helm package --sign` writes it.
fn provenance(chart_yaml: &str, file: &str, sha256: &str) -> String {
    format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{chart_yaml}\n...\nfiles:\n  {file}: sha256:{sha256}\n-----BEGIN PGP SIGNATURE-----\n\nwsBcBAEBCgAQBQJn\n-----END PGP SIGNATURE-----\n"
    )
}

struct Helm {
    node: TestNode,
    writer: reqwest::Client,
}

impl Helm {
    async fn start() -> Self {
        let node = TestNode::start().await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": "charts", "format": "helm"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201);
        let (_, token) = node.create_token(&["charts:write"]).await;
        let writer = client_with(&support::basic("ci", &token));
        Self { node, writer }
    }

    fn url(&self, rest: &str) -> String {
        self.node.url(&format!("/helm/charts/{rest}"))
    }

    async fn post(&self, body: Vec<u8>) -> (u16, Value) {
        let response = self
            .writer
            .post(self.url("api/charts"))
            .header("content-type", "application/gzip")
            .body(body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn index(&self) -> Value {
        let response = self
            .writer
            .get(self.url("index.yaml"))
            .send()
            .await
            .expect("index");
        assert_eq!(response.status(), 200);
        let text = response.text().await.expect("text");
        serde_json::from_str(&text).expect("index.yaml is JSON")
    }
}

#[tokio::test]
async fn uploads_are_in_the_index_at_once_newest_first_and_served_byte_for_byte() {
    let helm = Helm::start().await;
    // An empty repository has an index helm accepts.
    let empty = helm.index().await;
    assert_eq!(empty["apiVersion"], "v1");
    assert_eq!(empty["entries"], serde_json::json!({}));

    let first = chart("web", "0.1.0");
    let (status, body) = helm.post(first.clone()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["saved"], true);
    // The same archive again: success, nothing changes (CI reruns).
    let (status, _) = helm.post(first.clone()).await;
    assert_eq!(status, 200);
    // Multipart with provenance, as chartmuseum's clients send it.
    let second = chart("web", "0.2.0");
    let chart_yaml = "apiVersion: v2\nname: web\nversion: 0.2.0";
    let prov = provenance(chart_yaml, "web-0.2.0.tgz", &sha256_hex(&second));
    let boundary = "arcaHelmBoundary";
    let mut form = Vec::new();
    for (field, file, data) in [
        ("chart", "web-0.2.0.tgz", second.clone()),
        ("prov", "web-0.2.0.tgz.prov", prov.clone().into_bytes()),
    ] {
        form.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{file}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
        );
        form.extend_from_slice(&data);
        form.extend_from_slice(b"\r\n");
    }
    form.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let response = helm
        .writer
        .post(helm.url("api/charts"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(form)
        .send()
        .await
        .expect("multipart");
    assert_eq!(response.status(), 201);
    // A PUT of the archive, as Nexus and Artifactory clients do.
    let other = chart("api", "1.0.0-rc.1");
    let response = helm
        .writer
        .put(helm.url("api-1.0.0-rc.1.tgz"))
        .body(other.clone())
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 201);

    let index = helm.index().await;
    let web = index["entries"]["web"].as_array().expect("web entries");
    let versions: Vec<_> = web
        .iter()
        .map(|e| e["version"].as_str().expect("v"))
        .collect();
    assert_eq!(versions, ["0.2.0", "0.1.0"], "newest first");
    assert_eq!(web[1]["digest"], sha256_hex(&first));
    assert_eq!(web[1]["urls"][0], "charts/web-0.1.0.tgz");
    assert_eq!(web[1]["appVersion"], "1.0");
    assert_eq!(web[1]["description"], "the web chart");
    assert!(web[1]["created"].as_str().expect("created").ends_with('Z'));
    assert_eq!(index["entries"]["api"][0]["version"], "1.0.0-rc.1");

    // helm asks for gzip: the same document, a fraction of the bytes.
    let response = helm
        .writer
        .get(helm.url("index.yaml"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("get");
    assert_eq!(response.headers()["content-encoding"], "gzip");
    let compressed = response.bytes().await.expect("bytes");
    let mut plain = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(compressed.as_ref()),
        &mut plain,
    )
    .expect("gunzip");
    assert_eq!(
        serde_json::from_slice::<Value>(&plain).expect("json"),
        index
    );

    // ETag and 304; an upload changes it.
    let response = helm
        .writer
        .get(helm.url("index.yaml"))
        .send()
        .await
        .expect("get");
    let etag = response.headers()["etag"].clone();
    let again = helm
        .writer
        .get(helm.url("index.yaml"))
        .header("if-none-match", etag.clone())
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 304);
    let (status, _) = helm.post(chart("web", "0.3.0")).await;
    assert_eq!(status, 201);
    let changed = helm
        .writer
        .get(helm.url("index.yaml"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("get");
    assert_eq!(changed.status(), 200);

    // The archive and its provenance, byte for byte, at the entry's relative URL.
    for (path, expected) in [
        ("charts/web-0.1.0.tgz", first.clone()),
        ("charts/web-0.2.0.tgz.prov", prov.clone().into_bytes()),
        ("charts/api-1.0.0-rc.1.tgz", other),
    ] {
        let response = helm.writer.get(helm.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(
            response.bytes().await.expect("bytes").as_ref(),
            expected.as_slice(),
            "{path}"
        );
    }
    let response = helm
        .writer
        .get(helm.url("charts/web-0.1.0.tgz.prov"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404, "0.1.0 has no provenance");

    // chartmuseum's listing.
    let listed: Value = helm
        .writer
        .get(helm.url("api/charts/web"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(3));
    assert!(helm.node.metric("arca_helm_requests_total").await >= 10.0);
}

#[tokio::test]
async fn bad_uploads_are_refused_and_store_nothing() {
    let helm = Helm::start().await;
    let (status, _) = helm.post(chart("web", "0.1.0")).await;
    assert_eq!(status, 201);
    let chunks = helm.node.stored_chunks();
    let index = helm.index().await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not gzip", b"hello".to_vec(), 400),
        (
            "no Chart.yaml at the top",
            archive("web/sub", "apiVersion: v2\nname: web\nversion: 0.2.0\n"),
            400,
        ),
        (
            "no apiVersion",
            archive("web", "name: web\nversion: 0.2.0\n"),
            400,
        ),
        (
            "not semver",
            archive("web", "apiVersion: v2\nname: web\nversion: latest\n"),
            400,
        ),
        (
            "a bad name",
            archive("x", "apiVersion: v2\nname: ../x\nversion: 0.2.0\n"),
            400,
        ),
        (
            "not YAML",
            archive("web", "apiVersion: v2\nname: [web\n"),
            400,
        ),
    ];
    for (case, body, expected) in cases {
        let (status, response) = helm.post(body).await;
        assert_eq!(status, expected, "{case}: {response}");
        assert!(
            response["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{case}: {response}"
        );
    }
    // Other bytes under a stored version: 409.
    let changed = archive(
        "web",
        "apiVersion: v2\nname: web\nversion: 0.1.0\ndescription: changed\n",
    );
    let (status, response) = helm.post(changed).await;
    assert_eq!(status, 409, "{response}");
    // A PUT whose file name is not the chart's.
    let response = helm
        .writer
        .put(helm.url("web-9.9.9.tgz"))
        .body(chart("web", "0.2.0"))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 400);
    // A provenance file for a chart that is not there, or naming another digest.
    let response = helm
        .writer
        .put(helm.url("charts/web-0.5.0.tgz.prov"))
        .body(provenance("", "web-0.5.0.tgz", "00"))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 404);
    let response = helm
        .writer
        .put(helm.url("charts/web-0.1.0.tgz.prov"))
        .body(provenance("", "web-0.1.0.tgz", &"0".repeat(64)))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 400);
    assert_eq!(helm.index().await, index, "the index did not change");
    assert_eq!(helm.node.stored_chunks(), chunks, "nothing was stored");

    // Without credentials: a Basic challenge; a read token cannot upload.
    let response = reqwest::Client::new()
        .post(helm.url("api/charts"))
        .body(chart("web", "0.2.0"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .starts_with("Basic"));
    let (_, reader) = helm.node.create_token(&["charts:read"]).await;
    let response = client_with(&support::basic("ci", &reader))
        .post(helm.url("api/charts"))
        .body(chart("web", "0.2.0"))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 403);
    // Paths that are not a chart's: 404 to an administrator; a path the format does not
    // know needs the most, so a writer is refused it.
    for path in [
        "charts/web",
        "charts/web-0.1.0.zip",
        "charts/nothing-1.0.0.tgz",
        "nothing",
    ] {
        let response = helm
            .node
            .http
            .get(helm.url(path))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 404, "{path}");
    }
    let response = helm
        .writer
        .get(helm.url("nothing"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 403);
}
