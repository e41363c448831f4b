//! The Maven format over HTTP, in process: a release deploy in the order Maven 3.8.7 sends it
//! and its resolution (computed checksums, headers, ranges, validators), SNAPSHOT deploys whose
//! build numbers the rendered metadata drives, immutability with identical retries,
//! concurrent deploys of one artifact, checksum PUTs, the Basic challenge answered before a
//! body is sent (`Expect: 100-continue`), and a table of bad requests that store nothing. The
//! real `mvn` runs against the real binary in `cli/tests/maven_clients.rs`.

mod support;

use std::time::Duration;

use md5::Digest as _;
use support::{basic, client_with, raw_request, TestNode};

const JAR: &str = "com/acme/hello/1.0.0/hello-1.0.0.jar";
const POM: &str = "com/acme/hello/1.0.0/hello-1.0.0.pom";
const ARTIFACT_METADATA: &str = "com/acme/hello/maven-metadata.xml";

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(sha1::Sha1::digest(data))
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(md5::Md5::digest(data))
}

fn pom(version: &str) -> Vec<u8> {
    format!(
        "<project><modelVersion>4.0.0</modelVersion><groupId>com.acme</groupId><artifactId>hello</artifactId><version>{version}</version></project>\n"
    )
    .into_bytes()
}

/// The artifact-level document `mvn deploy` PUTs after merging its version in.
fn client_metadata(versions: &[&str]) -> Vec<u8> {
    let listed: String = versions
        .iter()
        .map(|v| format!("<version>{v}</version>"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata><groupId>com.acme</groupId><artifactId>hello</artifactId><versioning><release>{}</release><versions>{listed}</versions><lastUpdated>20261201080849</lastUpdated></versioning></metadata>\n",
        versions.last().copied().unwrap_or_default()
    )
    .into_bytes()
}

struct Mvn {
    node: TestNode,
    /// `Basic deployer:<token>` with read and write on `m2`, as settings.xml makes Maven send.
    deployer: reqwest::Client,
}

impl Mvn {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut arca_node::config::NodeConfig)) -> Self {
        let node = TestNode::start_with(adjust).await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": "m2", "format": "maven"}))
            .send()
            .await
            .expect("create repo");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, 201, "create repo: {body}");
        let (_, token) = node.create_token(&["m2:write"]).await;
        let deployer = client_with(&basic("deployer", &token));
        Self { node, deployer }
    }

    fn url(&self, path: &str) -> String {
        self.node.url(&format!("/maven/m2/{path}"))
    }

    async fn put(&self, path: &str, body: Vec<u8>) -> (u16, String) {
        let response = self
            .deployer
            .put(self.url(path))
            .body(body)
            .send()
            .await
            .expect("put");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// A file and its `.sha1` and `.md5`, as Maven deploys them; every answer must be a 2xx.
    async fn deploy(&self, path: &str, body: &[u8]) {
        let (status, text) = self.put(path, body.to_vec()).await;
        assert!(matches!(status, 200 | 201), "PUT {path}: {status} {text}");
        for (suffix, digest) in [("sha1", sha1_hex(body)), ("md5", md5_hex(body))] {
            let (status, text) = self.put(&format!("{path}.{suffix}"), digest.into()).await;
            assert!(
                matches!(status, 200 | 201),
                "PUT {path}.{suffix}: {status} {text}"
            );
        }
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.deployer.get(self.url(path)).send().await.expect("get")
    }

    async fn text(&self, path: &str) -> (u16, String) {
        let response = self.get(path).await;
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn must_text(&self, path: &str) -> String {
        let (status, text) = self.text(path).await;
        assert_eq!(status, 200, "GET {path}: {text}");
        text
    }
}

#[tokio::test]
async fn a_release_deploy_in_mavens_order_is_resolved_with_computed_checksums() {
    let mvn = Mvn::start().await;
    let jar = support::bytes(100_000, 1);
    let pom = pom("1.0.0");
    mvn.deploy(POM, &pom).await;
    mvn.deploy(JAR, &jar).await;
    // Maven reads the artifact's metadata to merge its version in: it is rendered from the
    // files already stored (so a concurrent deploy's version is never lost).
    let (status, before) = mvn.text(ARTIFACT_METADATA).await;
    assert_eq!(status, 200, "{before}");
    let document = client_metadata(&["1.0.0"]);
    mvn.deploy(ARTIFACT_METADATA, &document).await;

    // Resolution: the metadata, its checksums, the files and theirs.
    let metadata = mvn.must_text(ARTIFACT_METADATA).await;
    for part in [
        "<groupId>com.acme</groupId>",
        "<artifactId>hello</artifactId>",
        "<latest>1.0.0</latest>",
        "<release>1.0.0</release>",
        "<version>1.0.0</version>",
        "<lastUpdated>",
    ] {
        assert!(metadata.contains(part), "{part} in {metadata}");
    }
    assert_eq!(
        mvn.must_text(&format!("{ARTIFACT_METADATA}.sha1")).await,
        sha1_hex(metadata.as_bytes())
    );
    assert_eq!(
        mvn.must_text(&format!("{ARTIFACT_METADATA}.md5")).await,
        md5_hex(metadata.as_bytes())
    );
    let response = mvn.get(JAR).await;
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    assert_eq!(headers["x-checksum-sha1"], sha1_hex(&jar).as_str());
    assert_eq!(headers["x-checksum-md5"], md5_hex(&jar).as_str());
    assert_eq!(
        headers["x-checksum-sha256"],
        support::sha256_hex(&jar).as_str()
    );
    assert!(headers["cache-control"]
        .to_str()
        .unwrap_or_default()
        .contains("immutable"));
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        jar.as_slice()
    );
    for (suffix, digest) in [
        ("sha1", sha1_hex(&jar)),
        ("md5", md5_hex(&jar)),
        ("sha256", support::sha256_hex(&jar)),
        ("sha512", hex::encode(sha2::Sha512::digest(&jar))),
    ] {
        assert_eq!(
            mvn.must_text(&format!("{JAR}.{suffix}")).await,
            digest,
            "{suffix}"
        );
    }
    assert_eq!(mvn.must_text(POM).await.as_bytes(), pom.as_slice());
    let ranged = mvn
        .deployer
        .get(mvn.url(JAR))
        .header("range", "bytes=10-19")
        .send()
        .await
        .expect("range");
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.expect("bytes").as_ref(), &jar[10..20]);
    let head = mvn.deployer.head(mvn.url(JAR)).send().await.expect("head");
    assert_eq!(
        head.headers()["content-length"],
        jar.len().to_string().as_str()
    );
    // Metadata revalidates (no-cache, ETag, 304).
    let response = mvn.get(ARTIFACT_METADATA).await;
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let etag = response.headers()["etag"].clone();
    let again = mvn
        .deployer
        .get(mvn.url(ARTIFACT_METADATA))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("get");
    assert_eq!(again.status(), 304);
    // Unknown files and metadata are 404, in text.
    for missing in [
        "com/acme/hello/9.9.9/hello-9.9.9.jar",
        "com/acme/other/maven-metadata.xml",
        "com/acme/hello/9.9-SNAPSHOT/maven-metadata.xml",
    ] {
        let (status, text) = mvn.text(missing).await;
        assert_eq!(status, 404, "{missing}");
        assert!(!text.trim().is_empty());
    }
    // What arca ls and stat read.
    let listing = mvn.node.json("/api/v1/repos/m2/packages").await;
    assert_eq!(
        listing["packages"][0]["name"], "com.acme:hello",
        "{listing}"
    );
    assert_eq!(listing["packages"][0]["latest"], "1.0.0");
    let detail = mvn
        .node
        .json("/api/v1/repos/m2/packages/com.acme:hello")
        .await;
    assert_eq!(
        detail["versions"][0]["files"].as_array().map(Vec::len),
        Some(2)
    );
    let repo = mvn.node.json("/api/v1/repos/m2").await;
    assert_eq!(repo["artifacts"], 2, "{repo}");
    assert!(mvn.node.metric("arca_maven_requests_total").await >= 20.0);
}

/// A SNAPSHOT deploy as Maven makes it: read the version's metadata for the last build
/// number, upload the next build, then the metadata.
async fn deploy_snapshot(mvn: &Mvn, stamp: &str, jar: &[u8]) -> u32 {
    let dir = "com/acme/hello/1.1.0-SNAPSHOT";
    let (status, doc) = mvn.text(&format!("{dir}/maven-metadata.xml")).await;
    let last = match status {
        404 => 0,
        200 => doc
            .split("<buildNumber>")
            .nth(1)
            .and_then(|rest| rest.split('<').next())
            .and_then(|n| n.parse::<u32>().ok())
            .expect("a build number"),
        other => panic!("snapshot metadata: {other} {doc}"),
    };
    let build = last + 1;
    let value = format!("1.1.0-{stamp}-{build}");
    mvn.deploy(&format!("{dir}/hello-{value}.pom"), &pom("1.1.0-SNAPSHOT"))
        .await;
    mvn.deploy(&format!("{dir}/hello-{value}.jar"), jar).await;
    let version_doc = format!(
        "<metadata modelVersion=\"1.1.0\"><groupId>com.acme</groupId><artifactId>hello</artifactId><version>1.1.0-SNAPSHOT</version><versioning><snapshot><timestamp>{stamp}</timestamp><buildNumber>{build}</buildNumber></snapshot></versioning></metadata>"
    );
    mvn.deploy(&format!("{dir}/maven-metadata.xml"), version_doc.as_bytes())
        .await;
    mvn.deploy(ARTIFACT_METADATA, &client_metadata(&["1.1.0-SNAPSHOT"]))
        .await;
    build
}

#[tokio::test]
async fn snapshot_deploys_number_their_builds_from_the_rendered_metadata() {
    let mvn = Mvn::start().await;
    assert_eq!(
        deploy_snapshot(&mvn, "20261201.080849", b"build one").await,
        1
    );
    assert_eq!(
        deploy_snapshot(&mvn, "20261201.090000", b"build two").await,
        2
    );
    let doc = mvn
        .must_text("com/acme/hello/1.1.0-SNAPSHOT/maven-metadata.xml")
        .await;
    for part in [
        "<version>1.1.0-SNAPSHOT</version>",
        "<timestamp>20261201.090000</timestamp>",
        "<buildNumber>2</buildNumber>",
        "<extension>jar</extension>",
        "<extension>pom</extension>",
        "<value>1.1.0-20261201.090000-2</value>",
    ] {
        assert!(doc.contains(part), "{part} in {doc}");
    }
    assert!(!doc.contains("-1</value>"), "only the newest build: {doc}");
    // Both builds stay retrievable.
    for (value, bytes) in [
        ("1.1.0-20261201.080849-1", &b"build one"[..]),
        ("1.1.0-20261201.090000-2", b"build two"),
    ] {
        let body = mvn
            .must_text(&format!("com/acme/hello/1.1.0-SNAPSHOT/hello-{value}.jar"))
            .await;
        assert_eq!(body.as_bytes(), bytes);
    }
    let artifact = mvn.must_text(ARTIFACT_METADATA).await;
    assert!(
        artifact.contains("<latest>1.1.0-SNAPSHOT</latest>"),
        "{artifact}"
    );
    assert!(
        !artifact.contains("<release>"),
        "no release yet: {artifact}"
    );
}

#[tokio::test]
async fn released_files_never_change_and_plain_snapshots_may() {
    let mvn = Mvn::start().await;
    assert_eq!(mvn.put(JAR, b"one".to_vec()).await.0, 201);
    let (status, text) = mvn.put(JAR, b"one".to_vec()).await;
    assert_eq!(status, 200, "an identical retry succeeds: {text}");
    let (status, text) = mvn.put(JAR, b"two".to_vec()).await;
    assert_eq!(status, 409, "{text}");
    assert!(text.contains("never change"), "{text}");
    assert_eq!(mvn.must_text(JAR).await, "one");

    let stamped = "com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-20261201.101010-3.jar";
    assert_eq!(mvn.put(stamped, b"a".to_vec()).await.0, 201);
    assert_eq!(mvn.put(stamped, b"a".to_vec()).await.0, 200);
    assert_eq!(mvn.put(stamped, b"b".to_vec()).await.0, 409);

    let plain = "com/acme/hello/1.1.0-SNAPSHOT/hello-1.1.0-SNAPSHOT.jar";
    assert_eq!(mvn.put(plain, b"first".to_vec()).await.0, 201);
    let (status, text) = mvn.put(plain, b"second".to_vec()).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(mvn.must_text(plain).await, "second");
    assert_eq!(
        mvn.must_text(&format!("{plain}.sha1")).await,
        sha1_hex(b"second")
    );
    let repo = mvn.node.json("/api/v1/repos/m2").await;
    assert_eq!(repo["artifacts"], 3, "a replaced file counts once: {repo}");

    let deleted = mvn
        .deployer
        .delete(mvn.url(JAR))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 405);
    assert_eq!(mvn.must_text(JAR).await, "one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_deploys_of_one_artifact_lose_no_version() {
    let mvn = std::sync::Arc::new(Mvn::start().await);
    let versions: Vec<String> = (0..16).map(|i| format!("2.{i}.0")).collect();
    let mut tasks = Vec::new();
    for version in versions.clone() {
        let mvn = mvn.clone();
        tasks.push(tokio::spawn(async move {
            let dir = format!("com/acme/hello/{version}");
            mvn.deploy(&format!("{dir}/hello-{version}.pom"), &pom(&version))
                .await;
            mvn.deploy(&format!("{dir}/hello-{version}.jar"), version.as_bytes())
                .await;
            // Each client PUTs the document it merged: only its own version.
            mvn.deploy(ARTIFACT_METADATA, &client_metadata(&[version.as_str()]))
                .await;
        }));
    }
    for task in tasks {
        task.await.expect("deploy");
    }
    let doc = mvn.must_text(ARTIFACT_METADATA).await;
    for version in &versions {
        assert!(
            doc.contains(&format!("<version>{version}</version>")),
            "{version}: {doc}"
        );
    }
    assert!(doc.contains("<latest>2.15.0</latest>"), "{doc}");
}

#[tokio::test]
async fn checksum_puts_must_match_the_stored_file() {
    let mvn = Mvn::start().await;
    assert_eq!(mvn.put(JAR, b"jar".to_vec()).await.0, 201);
    let sha1 = format!("{JAR}.sha1");
    assert_eq!(mvn.put(&sha1, sha1_hex(b"jar").into()).await.0, 200);
    let named = format!("{}  hello-1.0.0.jar\n", sha1_hex(b"jar").to_uppercase());
    assert_eq!(mvn.put(&sha1, named.into()).await.0, 200, "hex and a name");
    let (status, text) = mvn.put(&sha1, sha1_hex(b"other").into()).await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("checksum mismatch"), "{text}");
    let (status, text) = mvn.put(&format!("{JAR}.md5"), b"xyz".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    let missing = "com/acme/hello/1.0.0/hello-1.0.0-sources.jar.sha1";
    let (status, text) = mvn.put(missing, sha1_hex(b"jar").into()).await;
    assert_eq!(status, 404, "{text}");
    // Metadata checksums are accepted when the document exists (the served one is
    // rendered, with checksums of its own).
    let md = format!("{ARTIFACT_METADATA}.sha1");
    assert_eq!(mvn.put(&md, sha1_hex(b"any").into()).await.0, 200);
    let none = "com/acme/nothing/maven-metadata.xml.sha1";
    assert_eq!(mvn.put(none, sha1_hex(b"any").into()).await.0, 404);
}

/// Reads an HTTP/1.1 response head from `stream`.
async fn read_head(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
            .await
            .expect("an answer before the body is sent")
            .expect("read");
        assert!(read > 0, "closed after {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

#[tokio::test]
async fn puts_are_challenged_before_their_body_is_sent() {
    use tokio::io::AsyncWriteExt;
    let mvn = Mvn::start().await;
    let addr = mvn.node.node().http_addr;
    let put_head = |auth: &str, length: usize| {
        format!(
            "PUT /maven/m2/{JAR} HTTP/1.1\r\nHost: x\r\n{auth}Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n"
        )
    };
    // Without credentials: 401 and the challenge, and no 100 Continue first.
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(put_head("", 100_000).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"arca\""),
        "{head}"
    );
    // With credentials: 100 Continue, then the body, then 201.
    let auth = format!("Authorization: {}\r\n", mvn.node.admin_auth());
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(put_head(&auth, 5).as_bytes())
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 100"), "{head}");
    stream.write_all(b"hello").await.expect("body");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    // Anonymous reads of a private repository are challenged too (Maven sends its
    // credentials only then); a read-only token may not deploy.
    let read = mvn.node.anon.get(mvn.url(JAR)).send().await.expect("get");
    assert_eq!(read.status(), 401);
    assert!(read.headers()["www-authenticate"]
        .to_str()
        .unwrap_or_default()
        .starts_with("Basic realm=\"arca\""));
    let (_, token) = mvn.node.create_token(&["m2:read"]).await;
    let reader = client_with(&basic("reader", &token));
    let denied = reader
        .put(mvn.url(POM))
        .body(pom("1.0.0"))
        .send()
        .await
        .expect("put");
    assert_eq!(denied.status(), 403);
    assert_eq!(
        reader.get(mvn.url(JAR)).send().await.expect("get").status(),
        200
    );
}

#[tokio::test]
async fn bad_requests_get_a_precise_status_and_store_nothing() {
    let mvn = Mvn::start_with(|config| config.limits.max_upload_bytes = 1 << 20).await;
    let chunks_before = mvn.node.stored_chunks();
    let big_metadata = format!(
        "<metadata><groupId>{}</groupId></metadata>",
        "x".repeat(1 << 20)
    );
    let many_plugins = format!(
        "<metadata><plugins>{}</plugins></metadata>",
        "<plugin><prefix>p</prefix><artifactId>p</artifactId></plugin>".repeat(1001)
    );
    let plugin_of_nothing = "<metadata><plugins><plugin><name>x</name><prefix>hello</prefix><artifactId>hello-maven-plugin</artifactId></plugin></plugins></metadata>";
    let cases: Vec<(&str, &str, String, Vec<u8>, u16)> = vec![
        (
            "a .. segment",
            "PUT",
            "com/../hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "an encoded .. segment",
            "PUT",
            "com/%2e%2e/hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "an encoded slash",
            "PUT",
            "com/acme%2f..%2fx/hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "a backslash",
            "PUT",
            "com%5cacme/hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "an empty segment",
            "PUT",
            "com//hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "a space",
            "PUT",
            "com/acme/hel%20lo/1.0.0/hel%20lo-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "a dot in a group directory",
            "PUT",
            "com/ac.me/hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "another artifact's file",
            "PUT",
            "com/acme/hello/1.0.0/other-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "another version's file",
            "PUT",
            "com/acme/hello/1.0.0/hello-2.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "no extension",
            "PUT",
            "com/acme/hello/1.0.0/hello-1.0.0".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "no group",
            "PUT",
            "hello/1.0.0/hello-1.0.0.jar".into(),
            b"x".to_vec(),
            400,
        ),
        (
            "a file over the upload limit",
            "PUT",
            JAR.into(),
            vec![7; (1 << 20) + 1],
            413,
        ),
        (
            "malformed metadata",
            "PUT",
            ARTIFACT_METADATA.into(),
            b"<metadata><versioning></metadata>".to_vec(),
            400,
        ),
        (
            "metadata of no stored artifact",
            "PUT",
            ARTIFACT_METADATA.into(),
            client_metadata(&["1.0.0"]),
            400,
        ),
        (
            "metadata of no stored snapshot",
            "PUT",
            "com/acme/hello/1.1.0-SNAPSHOT/maven-metadata.xml".into(),
            b"<metadata/>".to_vec(),
            400,
        ),
        (
            "metadata over 1 MiB",
            "PUT",
            ARTIFACT_METADATA.into(),
            big_metadata.into_bytes(),
            413,
        ),
        (
            "over 1000 plugins",
            "PUT",
            "com/acme/maven-metadata.xml".into(),
            many_plugins.into_bytes(),
            400,
        ),
        (
            "a plugin of no stored artifact",
            "PUT",
            "com/acme/maven-metadata.xml".into(),
            plugin_of_nothing.into(),
            400,
        ),
        (
            "a checksum that is not hex",
            "PUT",
            format!("{JAR}.sha1"),
            b"not a checksum".to_vec(),
            400,
        ),
        (
            "a checksum of no file",
            "PUT",
            format!("{JAR}.sha1"),
            sha1_hex(b"x").into_bytes(),
            404,
        ),
        ("a DELETE", "DELETE", JAR.into(), Vec::new(), 405),
        ("a POST", "POST", JAR.into(), b"x".to_vec(), 405),
    ];
    for (what, method, path, body, expected) in cases {
        let mut request = format!(
            "{method} /maven/m2/{path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        // A body over 1 MiB is declared, not sent: the node refuses it by its length.
        if body.len() <= 1 << 20 {
            request.extend_from_slice(&body);
        }
        let (status, text) = mvn.node.raw(&request).await;
        assert_eq!(status, expected, "{what}: {text}");
        assert!(!text.trim().is_empty(), "{what}: the answer says why");
        assert!(
            !text.trim_start().starts_with('{'),
            "{what}: text, not JSON: {text}"
        );
    }
    // Nothing was stored: no chunk, no artifact, no metadata.
    assert_eq!(
        mvn.node.stored_chunks(),
        chunks_before,
        "a refused request writes no chunk"
    );
    let repo = mvn.node.json("/api/v1/repos/m2").await;
    assert_eq!(repo["artifacts"], 0, "{repo}");
    assert_eq!(mvn.text(ARTIFACT_METADATA).await.0, 404);
    // And a good deploy still works afterwards.
    assert_eq!(mvn.put(JAR, b"fine".to_vec()).await.0, 201);
    let direct = raw_request(
        mvn.node.node().http_addr,
        format!("GET /maven/m2/{JAR} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert_eq!(direct.0, 401, "anonymous: challenged");
}
