//! The npm format over HTTP, in process: publishes as npm 11 sends them (base64 tarball in
//! JSON, Bearer token), packuments in both forms read right after the publish, tarballs,
//! immutability with idempotent retries, dist-tags, deprecation (a PUT without a tarball),
//! unpublish in npm's two steps, the web and legacy logins, a table of bad publishes that
//! store nothing, and the forwarded host in tarball URLs. The real npm client runs against
//! the real binary in `cli/tests/npm_clients.rs`.

mod support;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use sha1::Digest as _;
use support::{client_with, TestNode};

const CORGI: &str = "application/vnd.npm.install-v1+json; q=1.0, application/json; q=0.8, */*";

/// A gzipped npm tarball of `name@version` (`package/package.json` plus `filler`).
fn tarball(name: &str, version: &str, filler: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let json = json!({"name": name, "version": version, "main": "index.js"}).to_string();
    for (path, data) in [
        ("package/package.json", json.as_bytes()),
        ("package/index.js", filler),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data).expect("tar");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

fn integrity(bytes: &[u8]) -> String {
    format!(
        "sha512-{}",
        base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(bytes))
    )
}

/// The document `npm publish` PUTs (npm 11.19's shape).
fn publish_doc(name: &str, version: &str, bytes: &[u8], tag: &str) -> Value {
    json!({
        "_id": name, "name": name, "description": "a test package",
        "dist-tags": {tag: version},
        "versions": {version: {
            "name": name, "version": version, "main": "index.js",
            "dependencies": {}, "readme": "# hello", "_id": format!("{name}@{version}"),
            "_nodeVersion": "20.20.2", "_npmVersion": "11.19.1",
            "dist": {
                "integrity": integrity(bytes),
                "shasum": hex::encode(sha1::Sha1::digest(bytes)),
                "tarball": format!("http://127.0.0.1:4873/{name}/-/{name}-{version}.tgz"),
            }
        }},
        "access": "public",
        "_attachments": {format!("{name}-{version}.tgz"): {
            "content_type": "application/octet-stream",
            "data": base64::engine::general_purpose::STANDARD.encode(bytes),
            "length": bytes.len(),
        }}
    })
}

/// The packument URL segment of a name, as npm writes it (`@scope%2fname`).
fn encoded(name: &str) -> String {
    name.replace('/', "%2f")
}

struct Npm {
    node: TestNode,
    /// `Bearer <token>` with write and delete on the repository, as npm sends it.
    publisher: reqwest::Client,
}

impl Npm {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut arca_node::config::NodeConfig)) -> Self {
        let node = TestNode::start_with(adjust).await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&json!({"name": "js", "format": "npm"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201);
        let (_, token) = node.create_token(&["js:delete", "js:write"]).await;
        let publisher = client_with(&format!("Bearer {token}"));
        Self { node, publisher }
    }

    fn url(&self, rest: &str) -> String {
        self.node.url(&format!("/npm/js/{rest}"))
    }

    async fn put(&self, rest: &str, body: &Value) -> (u16, Value) {
        let response = self
            .publisher
            .put(self.url(rest))
            .json(body)
            .send()
            .await
            .expect("put");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn publish(&self, name: &str, version: &str, bytes: &[u8]) -> (u16, Value) {
        self.put(&encoded(name), &publish_doc(name, version, bytes, "latest"))
            .await
    }

    async fn packument(&self, name: &str, accept: &str) -> (u16, Value) {
        let response = self
            .publisher
            .get(self.url(&encoded(name)))
            .header("accept", accept)
            .send()
            .await
            .expect("packument");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn full(&self, name: &str) -> Value {
        let (status, doc) = self.packument(name, "application/json").await;
        assert_eq!(status, 200, "packument of {name}: {doc}");
        doc
    }
}

#[tokio::test]
async fn a_publish_is_served_in_both_packument_forms_with_its_tarball() {
    let npm = Npm::start().await;
    let bytes = tarball("@acme/hello", "1.0.0", b"module.exports = 1;\n");
    let (status, body) = npm.publish("@acme/hello", "1.0.0", &bytes).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["ok"], true);

    // Read right after the publish, in the form npm install asks for.
    let (status, corgi) = npm.packument("@acme/hello", CORGI).await;
    assert_eq!(status, 200, "{corgi}");
    assert_eq!(corgi["name"], "@acme/hello");
    assert_eq!(corgi["dist-tags"]["latest"], "1.0.0");
    assert!(corgi["modified"].is_string());
    let version = &corgi["versions"]["1.0.0"];
    assert_eq!(version["dist"]["integrity"], integrity(&bytes));
    assert!(version.get("readme").is_none() && version.get("_npmVersion").is_none());
    // The tarball URL is the server's (the client's has the scope twice), on this host.
    let tarball_url = version["dist"]["tarball"].as_str().expect("tarball");
    assert_eq!(
        tarball_url,
        npm.url("@acme/hello/-/hello-1.0.0.tgz"),
        "rewritten to the canonical URL"
    );

    // The full document has what npm view, publish and unpublish read.
    let full = npm.full("@acme/hello").await;
    for field in ["_id", "_rev", "name", "dist-tags", "versions", "time"] {
        assert!(full.get(field).is_some(), "full packument lacks {field}");
    }
    assert!(full["time"]["1.0.0"].is_string());
    assert_eq!(full["readme"], "# hello");
    assert_eq!(full["versions"]["1.0.0"]["_npmVersion"], "11.19.1");
    // Both spellings of the scoped name, and the unencoded one.
    for path in ["@acme%2Fhello", "@acme/hello"] {
        let response = npm.publisher.get(npm.url(path)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{path}");
    }

    // The tarball, whole and by range, with checksums.
    let response = npm
        .publisher
        .get(tarball_url)
        .send()
        .await
        .expect("tarball");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["x-checksum-sha1"],
        hex::encode(sha1::Sha1::digest(&bytes)).as_str()
    );
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        bytes.as_slice()
    );
    let response = npm
        .publisher
        .get(tarball_url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("range");
    assert_eq!(response.status(), 206);
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        &bytes[..10]
    );

    // A validator: the same document again is a 304.
    let etag = npm
        .publisher
        .get(npm.url("@acme%2fhello"))
        .send()
        .await
        .expect("get")
        .headers()["etag"]
        .clone();
    let response = npm
        .publisher
        .get(npm.url("@acme%2fhello"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 304);

    // What arca ls and stat read.
    let listing = npm.node.json("/api/v1/repos/js/packages").await;
    assert_eq!(listing["packages"][0]["name"], "@acme/hello", "{listing}");
    assert_eq!(listing["packages"][0]["latest"], "1.0.0");
    let detail = npm.node.json("/api/v1/repos/js/packages/@acme/hello").await;
    assert_eq!(
        detail["versions"][0]["files"][0]["name"], "hello-1.0.0.tgz",
        "{detail}"
    );

    // Unknown packages and tarballs: 404 in npm's body.
    let (status, body) = npm.packument("nope", "application/json").await;
    assert_eq!((status, body["error"].is_string()), (404, true), "{body}");
    let response = npm
        .publisher
        .get(npm.url("@acme/hello/-/hello-9.9.9.tgz"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 404);
    assert!(npm.node.metric("arca_npm_requests_total").await >= 8.0);
}

#[tokio::test]
async fn a_retried_publish_succeeds_and_other_bytes_for_a_released_version_are_refused() {
    let npm = Npm::start().await;
    let bytes = tarball("hello", "1.0.0", b"one");
    assert_eq!(npm.publish("hello", "1.0.0", &bytes).await.0, 201);
    let (status, body) = npm.publish("hello", "1.0.0", &bytes).await;
    assert_eq!(status, 200, "a CI retry of the same bytes succeeds: {body}");
    let other = tarball("hello", "1.0.0", b"two");
    let (status, body) = npm.publish("hello", "1.0.0", &other).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot modify pre-existing version"),
        "{body}"
    );
    let full = npm.full("hello").await;
    assert_eq!(
        full["versions"]["1.0.0"]["dist"]["integrity"],
        integrity(&bytes)
    );

    // A second version moves latest; a beta publish adds its tag only.
    let two = tarball("hello", "2.0.0", b"2");
    assert_eq!(npm.publish("hello", "2.0.0", &two).await.0, 201);
    let beta = tarball("hello", "3.0.0-beta.1", b"3b");
    let (status, _) = npm
        .put(
            "hello",
            &publish_doc("hello", "3.0.0-beta.1", &beta, "beta"),
        )
        .await;
    assert_eq!(status, 201);
    let full = npm.full("hello").await;
    assert_eq!(
        full["dist-tags"],
        json!({"latest": "2.0.0", "beta": "3.0.0-beta.1"})
    );
}

#[tokio::test]
async fn dist_tags_deprecation_and_unpublish_work_the_way_npm_sends_them() {
    let npm = Npm::start().await;
    for version in ["1.0.0", "1.1.0", "2.0.0"] {
        let bytes = tarball("@acme/tools", version, version.as_bytes());
        assert_eq!(npm.publish("@acme/tools", version, &bytes).await.0, 201);
    }
    // npm dist-tag add / ls / rm.
    let tags = "-/package/@acme%2ftools/dist-tags";
    let (status, _) = npm.put(&format!("{tags}/stable"), &json!("1.1.0")).await;
    assert_eq!(status, 200);
    let (status, body) = npm.put(&format!("{tags}/stable"), &json!("9.9.9")).await;
    assert_eq!(status, 404, "a tag needs a published version: {body}");
    let (status, body) = npm.put(&format!("{tags}/1.0.0"), &json!("1.0.0")).await;
    assert_eq!(status, 400, "a tag cannot look like a version: {body}");
    let listed: Value = npm
        .publisher
        .get(npm.url(tags))
        .send()
        .await
        .expect("tags")
        .json()
        .await
        .expect("json");
    assert_eq!(listed, json!({"latest": "2.0.0", "stable": "1.1.0"}));
    let response = npm
        .publisher
        .delete(npm.url(&format!("{tags}/stable")))
        .send()
        .await
        .expect("rm");
    assert_eq!(response.status(), 200);
    let response = npm
        .publisher
        .delete(npm.url(&format!("{tags}/latest")))
        .send()
        .await
        .expect("rm latest");
    assert_eq!(response.status(), 400, "latest can move, not go");

    // npm deprecate: the full document back, without attachments, `deprecated` set.
    let mut doc = npm.full("@acme/tools").await;
    doc["versions"]["1.0.0"]["deprecated"] = json!("use 2.x");
    let (status, body) = npm.put("@acme%2ftools", &doc).await;
    assert_eq!(status, 201, "{body}");
    let (_, corgi) = npm.packument("@acme/tools", CORGI).await;
    assert_eq!(corgi["versions"]["1.0.0"]["deprecated"], "use 2.x");
    assert!(corgi["versions"]["2.0.0"].get("deprecated").is_none());
    // Un-deprecate: an empty message.
    let mut doc = npm.full("@acme/tools").await;
    doc["versions"]["1.0.0"]["deprecated"] = json!("");
    assert_eq!(npm.put("@acme%2ftools", &doc).await.0, 201);
    let full = npm.full("@acme/tools").await;
    assert!(full["versions"]["1.0.0"].get("deprecated").is_none());

    // npm unpublish @acme/tools@2.0.0: the document without it at -rev, then the tarball.
    let mut doc = npm.full("@acme/tools").await;
    let rev = doc["_rev"].as_str().expect("rev").to_string();
    doc["versions"]
        .as_object_mut()
        .expect("versions")
        .remove("2.0.0");
    let (status, body) = npm.put(&format!("@acme%2ftools/-rev/{rev}"), &doc).await;
    assert_eq!(status, 201, "{body}");
    // A stale revision is refused (someone changed the package in between).
    let mut stale = doc.clone();
    stale["versions"]
        .as_object_mut()
        .expect("versions")
        .remove("1.1.0");
    let (status, body) = npm.put(&format!("@acme%2ftools/-rev/{rev}"), &stale).await;
    assert_eq!(status, 409, "{body}");
    let rev = npm.full("@acme/tools").await["_rev"]
        .as_str()
        .expect("rev")
        .to_string();
    let response = npm
        .publisher
        .delete(npm.url(&format!("@acme%2ftools/-/tools-2.0.0.tgz/-rev/{rev}")))
        .send()
        .await
        .expect("delete tarball");
    assert_eq!(response.status(), 200);
    let full = npm.full("@acme/tools").await;
    assert!(full["versions"].get("2.0.0").is_none());
    assert_eq!(full["dist-tags"]["latest"], "1.1.0", "latest falls back");
    let gone = npm
        .publisher
        .get(npm.url("@acme/tools/-/tools-2.0.0.tgz"))
        .send()
        .await
        .expect("get");
    assert_eq!(gone.status(), 404);
    // An unpublished version can come back only with the same bytes.
    let other = tarball("@acme/tools", "2.0.0", b"different");
    assert_eq!(npm.publish("@acme/tools", "2.0.0", &other).await.0, 409);

    // The whole package.
    let rev = npm.full("@acme/tools").await["_rev"]
        .as_str()
        .expect("rev")
        .to_string();
    let response = npm
        .publisher
        .delete(npm.url(&format!("@acme%2ftools/-rev/{rev}")))
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status(), 201);
    assert_eq!(npm.packument("@acme/tools", CORGI).await.0, 404);

    // A read token may not publish, tag or unpublish.
    let (_, token) = npm.node.create_token(&["js:read"]).await;
    let reader = client_with(&format!("Bearer {token}"));
    let bytes = tarball("ro", "1.0.0", b"x");
    let response = reader
        .put(npm.url("ro"))
        .json(&publish_doc("ro", "1.0.0", &bytes, "latest"))
        .send()
        .await
        .expect("put");
    assert_eq!(response.status(), 403);
    // Anonymous: a 401 with a challenge npm understands.
    let response = reqwest::Client::new()
        .get(npm.url("hello"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
}

#[tokio::test]
async fn web_and_legacy_logins_end_in_a_token_npm_can_use() {
    let npm = Npm::start().await;
    let anonymous = reqwest::Client::new();
    // Web: start, approve with the account's password, poll.
    let started: Value = anonymous
        .post(npm.url("-/v1/login"))
        .json(&json!({}))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let login_url = started["loginUrl"].as_str().expect("loginUrl");
    let done_url = started["doneUrl"].as_str().expect("doneUrl");
    let pending = anonymous.get(done_url).send().await.expect("poll");
    assert_eq!(pending.status(), 202);
    assert!(pending.headers().contains_key("retry-after"));
    let page = anonymous.get(login_url).send().await.expect("page");
    assert!(page.text().await.expect("html").contains("<form"));
    let wrong = anonymous
        .post(login_url)
        .form(&[("username", "admin"), ("password", "wrong")])
        .send()
        .await
        .expect("approve");
    assert_eq!(wrong.status(), 401);
    let approved = anonymous
        .post(login_url)
        .form(&[
            ("username", "admin"),
            ("password", npm.node.admin_password.as_str()),
        ])
        .send()
        .await
        .expect("approve");
    assert_eq!(approved.status(), 200);
    let done: Value = anonymous
        .get(done_url)
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .expect("json");
    let token = done["token"].as_str().expect("token");
    let whoami: Value = client_with(&format!("Bearer {token}"))
        .get(npm.url("-/whoami"))
        .send()
        .await
        .expect("whoami")
        .json()
        .await
        .expect("json");
    assert_eq!(whoami["username"], "admin");
    // The session answers once.
    assert_eq!(
        anonymous.get(done_url).send().await.expect("poll").status(),
        404
    );

    // The token is scoped to this repository.
    let other = npm
        .node
        .http
        .post(npm.node.url("/api/v1/repos"))
        .json(&json!({"name": "other", "format": "npm"}))
        .send()
        .await
        .expect("create");
    assert_eq!(other.status(), 201);
    let elsewhere = client_with(&format!("Bearer {token}"))
        .get(npm.node.url("/npm/other/x"))
        .send()
        .await
        .expect("get");
    assert_eq!(elsewhere.status(), 403);

    // Legacy: the CouchDB user PUT.
    let legacy = |password: &str| {
        json!({"_id": "org.couchdb.user:admin", "name": "admin", "password": password,
               "type": "user", "roles": [], "date": "2026-12-02T00:00:00.000Z"})
    };
    let response = anonymous
        .put(npm.url("-/user/org.couchdb.user:admin"))
        .json(&legacy("wrong"))
        .send()
        .await
        .expect("legacy");
    assert_eq!(response.status(), 401);
    let response = anonymous
        .put(npm.url("-/user/org.couchdb.user:admin"))
        .json(&legacy(&npm.node.admin_password))
        .send()
        .await
        .expect("legacy");
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.expect("json");
    let token = body["token"].as_str().expect("token").to_string();
    let client = client_with(&format!("Bearer {token}"));
    assert_eq!(
        client
            .get(npm.url("-/whoami"))
            .send()
            .await
            .expect("whoami")
            .status(),
        200
    );
    // npm logout revokes it.
    let response = client
        .delete(npm.url(&format!("-/user/token/{token}")))
        .send()
        .await
        .expect("logout");
    assert_eq!(response.status(), 200);
    support::wait_for(
        "the revoked token is refused",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            let url = npm.url("-/whoami");
            async move { (client.get(url).send().await.ok()?.status() == 401).then_some(()) }
        },
    )
    .await;

    // Ping and the audit endpoint npm install calls.
    let ping = anonymous.get(npm.url("-/ping")).send().await.expect("ping");
    assert_eq!(ping.status(), 200);
    let audit = npm
        .publisher
        .post(npm.url("-/npm/v1/security/advisories/bulk"))
        .json(&json!({"hello": ["1.0.0"]}))
        .send()
        .await
        .expect("audit");
    assert_eq!(audit.status(), 200);
    assert_eq!(audit.json::<Value>().await.expect("json"), json!({}));
    let auth_failures = npm.node.metric("arca_auth_failures_total").await;
    assert!(
        auth_failures >= 2.0,
        "failed logins are counted: {auth_failures}"
    );
}

#[tokio::test]
async fn bad_publishes_get_a_precise_status_and_store_nothing() {
    let npm = Npm::start().await;
    let good = tarball("hello", "1.0.0", b"x");
    let chunks_before = npm.node.stored_chunks();
    let edit = |f: &dyn Fn(&mut Value)| {
        let mut doc = publish_doc("hello", "1.0.0", &good, "latest");
        f(&mut doc);
        doc
    };
    let wrong_inside = tarball("other", "1.0.0", b"x");
    let cases: Vec<(&str, &str, Value, u16)> = vec![
        ("the URL names another package", "other", edit(&|_| {}), 400),
        (
            "an uppercase name",
            "Hello",
            edit(&|d| d["name"] = json!("Hello")),
            400,
        ),
        (
            "a traversal name",
            "..%2f..%2fetc",
            edit(&|d| d["name"] = json!("../../etc")),
            400,
        ),
        ("not JSON", "hello", json!("just a string"), 400),
        (
            "a wrong sha512",
            "hello",
            edit(&|d| d["versions"]["1.0.0"]["dist"]["integrity"] = json!(integrity(b"other"))),
            400,
        ),
        (
            "a wrong shasum",
            "hello",
            edit(&|d| d["versions"]["1.0.0"]["dist"]["shasum"] = json!("0".repeat(40))),
            400,
        ),
        (
            "no integrity",
            "hello",
            edit(&|d| {
                d["versions"]["1.0.0"]["dist"]
                    .as_object_mut()
                    .expect("test value")
                    .remove("integrity");
            }),
            400,
        ),
        (
            "a length that lies",
            "hello",
            edit(&|d| d["_attachments"]["hello-1.0.0.tgz"]["length"] = json!(3)),
            400,
        ),
        (
            "an attachment of no listed version",
            "hello",
            edit(&|d| {
                let a = d["_attachments"].as_object_mut().expect("test value");
                let v = a.remove("hello-1.0.0.tgz").expect("test value");
                a.insert("hello-2.0.0.tgz".into(), v);
            }),
            400,
        ),
        (
            "a version that is not semver",
            "hello",
            {
                let mut d = publish_doc("hello", "1.0", &good, "latest");
                d["versions"]["1.0"]["version"] = json!("1.0");
                d
            },
            400,
        ),
        (
            "a tarball of another package",
            "hello",
            {
                let mut d = publish_doc("hello", "1.0.0", &wrong_inside, "latest");
                d["name"] = json!("hello");
                d
            },
            400,
        ),
        (
            "a tarball that is not gzip",
            "hello",
            publish_doc("hello", "1.0.0", b"plain bytes", "latest"),
            400,
        ),
        (
            "a manifest over 1 MiB",
            "hello",
            edit(&|d| d["versions"]["1.0.0"]["big"] = json!("x".repeat(1 << 20))),
            400,
        ),
        (
            "a deprecation of an unpublished version",
            "hello",
            edit(&|d| {
                d.as_object_mut()
                    .expect("test value")
                    .remove("_attachments");
            }),
            404,
        ),
    ];
    for (what, path, body, expected) in cases {
        let (status, answer) = npm.put(path, &body).await;
        assert_eq!(status, expected, "{what}: {answer}");
        assert!(
            answer["error"].is_string(),
            "{what}: npm's error body, got {answer}"
        );
    }
    // Nothing became visible, no chunk is referenced.
    assert_eq!(npm.packument("hello", CORGI).await.0, 404);
    let listing = npm.node.json("/api/v1/repos/js/packages").await;
    assert_eq!(listing["packages"], json!([]), "{listing}");
    assert_eq!(
        npm.node.stored_chunks(),
        chunks_before,
        "a refused publish writes no chunk"
    );
    // And a good publish still works afterwards.
    assert_eq!(npm.publish("hello", "1.0.0", &good).await.0, 201);
}

#[tokio::test]
async fn tarball_urls_use_the_forwarded_host_only_when_told_to_trust_it() {
    for trust in [false, true] {
        let npm = Npm::start_with(|config| config.trust_forwarded_headers = trust).await;
        let bytes = tarball("fwd", "1.0.0", b"x");
        assert_eq!(npm.publish("fwd", "1.0.0", &bytes).await.0, 201);
        let doc: Value = npm
            .publisher
            .get(npm.url("fwd"))
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "npm.example.com")
            .send()
            .await
            .expect("get")
            .json()
            .await
            .expect("json");
        let url = doc["versions"]["1.0.0"]["dist"]["tarball"]
            .as_str()
            .expect("tarball")
            .to_string();
        if trust {
            assert_eq!(url, "https://npm.example.com/npm/js/fwd/-/fwd-1.0.0.tgz");
        } else {
            assert_eq!(url, npm.url("fwd/-/fwd-1.0.0.tgz"));
        }
    }
}
