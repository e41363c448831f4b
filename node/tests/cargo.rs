//! The cargo format over HTTP, in process: publishes as cargo 1.95 sends them (the binary
//! frame, the raw token as `Authorization`), the index file read right after, downloads,
//! immutability with idempotent retries, names unique modulo case and `-`/`_`, yank and unyank,
//! owners, search, the `Cargo login_url` challenge, and a table of bad publishes that store
//! nothing. The real cargo runs against the real binary in `cli/tests/cargo_clients.rs`.

mod support;

use serde_json::{json, Value};
use support::{basic, client_with, sha256_hex, TestNode};

/// A `.crate` of `name` `vers` (`Cargo.toml`, `src/lib.rs` with `filler`) under `root`.
fn crate_file(root: &str, name: &str, vers: &str, filler: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    let manifest =
        format!("[package]\nname = \"{name}\"\nversion = \"{vers}\"\nedition = \"2021\"\n");
    for (path, data) in [
        (format!("{root}/Cargo.toml"), manifest.as_bytes()),
        (format!("{root}/src/lib.rs"), filler),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, data).expect("tar");
    }
    builder.into_inner().expect("tar").finish().expect("gzip")
}

/// The metadata cargo 1.95 sends for a crate without dependencies.
fn metadata(name: &str, vers: &str) -> Value {
    json!({
        "name": name, "vers": vers, "deps": [], "features": {},
        "authors": [], "description": format!("{name}, a test crate"), "documentation": null,
        "homepage": null, "readme": null, "readme_file": null, "keywords": [], "categories": [],
        "license": "MIT", "license_file": null, "repository": null, "badges": {}, "links": null,
        "rust_version": null
    })
}

fn frame(metadata: &Value, file: &[u8]) -> Vec<u8> {
    let json = metadata.to_string();
    let mut body = (json.len() as u32).to_le_bytes().to_vec();
    body.extend_from_slice(json.as_bytes());
    body.extend_from_slice(&(file.len() as u32).to_le_bytes());
    body.extend_from_slice(file);
    body
}

struct Cargo {
    node: TestNode,
    /// The raw token as cargo sends it, with write on the repository.
    publisher: reqwest::Client,
}

impl Cargo {
    async fn start() -> Self {
        let node = TestNode::start().await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&json!({"name": "rs", "format": "cargo"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201);
        let (_, token) = node.create_token(&["rs:write"]).await;
        let publisher = client_with(&token);
        Self { node, publisher }
    }

    fn url(&self, rest: &str) -> String {
        self.node.url(&format!("/cargo/rs/{rest}"))
    }

    async fn publish_with(&self, client: &reqwest::Client, body: Vec<u8>) -> (u16, Value) {
        let response = client
            .put(self.url("api/v1/crates/new"))
            .body(body)
            .send()
            .await
            .expect("publish");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn publish(&self, name: &str, vers: &str, filler: &[u8]) -> (u16, Value) {
        let file = crate_file(&format!("{name}-{vers}"), name, vers, filler);
        self.publish_with(&self.publisher, frame(&metadata(name, vers), &file))
            .await
    }

    /// The index file's lines, or the status when it is not 200.
    async fn index(&self, path: &str) -> Result<Vec<Value>, u16> {
        let response = self
            .publisher
            .get(self.url(&format!("index/{path}")))
            .send()
            .await
            .expect("index");
        if response.status() != 200 {
            return Err(response.status().as_u16());
        }
        let text = response.text().await.expect("text");
        Ok(text
            .lines()
            .map(|line| serde_json::from_str(line).expect("index line"))
            .collect())
    }
}

fn detail(body: &Value) -> String {
    body["errors"][0]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_publish_is_in_the_index_right_away_and_downloads_with_its_checksum() {
    let cargo = Cargo::start().await;
    // cargo's first request, anonymous: a private registry challenges it so cargo sends
    // its token, and names where to get one.
    let anonymous = reqwest::Client::new();
    let response = anonymous
        .get(cargo.url("index/config.json"))
        .send()
        .await
        .expect("config");
    assert_eq!(response.status(), 401);
    assert_eq!(
        response.headers()["www-authenticate"],
        format!("Cargo login_url=\"{}\"", cargo.url("me")).as_str()
    );
    let me = anonymous.get(cargo.url("me")).send().await.expect("me");
    assert_eq!(me.status(), 200);
    assert!(me.text().await.expect("text").contains("cargo login"));
    let config: Value = cargo
        .publisher
        .get(cargo.url("index/config.json"))
        .send()
        .await
        .expect("config")
        .json()
        .await
        .expect("json");
    assert_eq!(config["dl"], cargo.url("api/v1/crates"));
    assert_eq!(config["api"], cargo.node.url("/cargo/rs"));
    assert_eq!(config["auth-required"], true);

    let file = crate_file(
        "arca-hello-0.1.0",
        "arca-hello",
        "0.1.0",
        b"pub fn hi() {}\n",
    );
    let (status, body) = cargo
        .publish_with(
            &cargo.publisher,
            frame(&metadata("arca-hello", "0.1.0"), &file),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["warnings"]["other"].is_array(), "{body}");

    let lines = cargo.index("ar/ca/arca-hello").await.expect("index file");
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["name"], "arca-hello");
    assert_eq!(lines[0]["vers"], "0.1.0");
    assert_eq!(lines[0]["cksum"], sha256_hex(&file));
    assert_eq!(lines[0]["yanked"], false);
    assert_eq!(lines[0]["v"], 1);
    assert!(lines[0]["pubtime"].is_string());

    // The index answers 304 to its ETag, and a crate that is not here is a 404.
    let response = cargo
        .publisher
        .get(cargo.url("index/ar/ca/arca-hello"))
        .send()
        .await
        .expect("index");
    let etag = response.headers()["etag"].clone();
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let response = cargo
        .publisher
        .get(cargo.url("index/ar/ca/arca-hello"))
        .header("if-none-match", etag)
        .send()
        .await
        .expect("index");
    assert_eq!(response.status(), 304);
    assert_eq!(cargo.index("ar/ca/arca-hellx").await, Err(404));
    // The other spelling's path: cargo probes it on a miss, and it is not this crate's file.
    assert_eq!(cargo.index("ar/ca/arca_hello").await, Err(404));

    // The download, whole and by range.
    let url = format!(
        "{}/arca-hello/0.1.0/download",
        config["dl"].as_str().expect("dl")
    );
    let response = cargo.publisher.get(&url).send().await.expect("download");
    assert_eq!(response.status(), 200);
    assert!(response.headers().get("content-encoding").is_none());
    assert_eq!(
        response.headers()["x-checksum-sha256"],
        sha256_hex(&file).as_str()
    );
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        file.as_slice()
    );
    let response = cargo
        .publisher
        .get(&url)
        .header("range", "bytes=0-9")
        .send()
        .await
        .expect("range");
    assert_eq!(response.status(), 206);
    assert_eq!(response.bytes().await.expect("bytes").as_ref(), &file[..10]);
    let missing = cargo
        .publisher
        .get(cargo.url("api/v1/crates/arca-hello/0.2.0/download"))
        .send()
        .await
        .expect("download");
    assert_eq!(missing.status(), 404);

    // Requests are counted per route.
    assert!(cargo.node.metric("arca_cargo_requests_total").await >= 6.0);
}

#[tokio::test]
async fn a_retried_publish_succeeds_and_other_bytes_or_another_spelling_are_refused() {
    let cargo = Cargo::start().await;
    let (status, body) = cargo.publish("Hello_World", "1.0.0", b"// one\n").await;
    assert_eq!(status, 200, "{body}");
    // CI reruns the job: the same bytes succeed and change nothing.
    let (status, body) = cargo.publish("Hello_World", "1.0.0", b"// one\n").await;
    assert_eq!(status, 200, "{body}");
    let lines = cargo.index("he/ll/hello_world").await.expect("index");
    assert_eq!(lines.len(), 1);
    let cksum = lines[0]["cksum"].clone();

    // Other bytes under a published version.
    let (status, body) = cargo.publish("Hello_World", "1.0.0", b"// two\n").await;
    assert_eq!(status, 409, "{body}");
    assert!(detail(&body).contains("already exists"), "{body}");
    // The same version with other build metadata is the same version to cargo.
    let (status, body) = cargo
        .publish("Hello_World", "1.0.0+other", b"// one\n")
        .await;
    assert_eq!(status, 409, "{body}");
    // The same crate under another spelling.
    for other in ["hello-world", "HELLO_WORLD"] {
        let (status, body) = cargo.publish(other, "2.0.0", b"// one\n").await;
        assert_eq!(status, 409, "{other}: {body}");
        assert!(detail(&body).contains("Hello_World"), "{body}");
    }
    let lines = cargo.index("he/ll/hello_world").await.expect("index");
    assert_eq!(lines.len(), 1, "nothing was added");
    assert_eq!(lines[0]["cksum"], cksum);

    // A new version is appended, newest last.
    let (status, body) = cargo.publish("Hello_World", "1.1.0", b"// three\n").await;
    assert_eq!(status, 200, "{body}");
    let lines = cargo.index("he/ll/hello_world").await.expect("index");
    let versions: Vec<_> = lines.iter().map(|l| l["vers"].clone()).collect();
    assert_eq!(versions, [json!("1.0.0"), json!("1.1.0")]);
}

#[tokio::test]
async fn yank_unyank_owners_and_search() {
    let cargo = Cargo::start().await;
    let (status, body) = cargo.publish("yanky", "0.1.0", b"// a\n").await;
    assert_eq!(status, 200, "{body}");

    let yank = cargo
        .publisher
        .delete(cargo.url("api/v1/crates/yanky/0.1.0/yank"))
        .send()
        .await
        .expect("yank");
    assert_eq!(yank.status(), 200);
    assert_eq!(yank.json::<Value>().await.expect("json")["ok"], true);
    assert_eq!(
        cargo.index("ya/nk/yanky").await.expect("index")[0]["yanked"],
        true
    );
    // The file stays downloadable (lockfiles pin yanked versions).
    let download = cargo
        .publisher
        .get(cargo.url("api/v1/crates/yanky/0.1.0/download"))
        .send()
        .await
        .expect("download");
    assert_eq!(download.status(), 200);
    let unyank = cargo
        .publisher
        .put(cargo.url("api/v1/crates/yanky/0.1.0/unyank"))
        .send()
        .await
        .expect("unyank");
    assert_eq!(unyank.status(), 200);
    assert_eq!(
        cargo.index("ya/nk/yanky").await.expect("index")[0]["yanked"],
        false
    );
    let missing = cargo
        .publisher
        .delete(cargo.url("api/v1/crates/yanky/9.9.9/yank"))
        .send()
        .await
        .expect("yank");
    assert_eq!(missing.status(), 404);

    // The publisher's account owns the crate.
    let owners: Value = cargo
        .publisher
        .get(cargo.url("api/v1/crates/yanky/owners"))
        .send()
        .await
        .expect("owners")
        .json()
        .await
        .expect("json");
    assert_eq!(owners["users"][0]["login"], "admin");

    // Another account with write on the repository may publish new crates but not
    // versions of a crate it does not own, until an owner adds it.
    let node = &cargo.node;
    let created = node
        .http
        .post(node.url("/api/v1/users"))
        .json(&json!({"name": "bob", "password": "correct horse battery"}))
        .send()
        .await
        .expect("user");
    assert!(created.status().is_success(), "{}", created.status());
    let granted = node
        .http
        .post(node.url("/api/v1/roles"))
        .json(&json!({"principal": "user:bob", "pattern": "rs", "role": "write"}))
        .send()
        .await
        .expect("grant");
    assert!(granted.status().is_success(), "{}", granted.status());
    let bob = client_with(&basic("bob", "correct horse battery"));
    let file = crate_file("yanky-0.2.0", "yanky", "0.2.0", b"// b\n");
    let (status, body) = cargo
        .publish_with(&bob, frame(&metadata("yanky", "0.2.0"), &file))
        .await;
    assert_eq!(status, 403, "{body}");
    assert!(detail(&body).contains("not an owner"), "{body}");
    let added = cargo
        .publisher
        .put(cargo.url("api/v1/crates/yanky/owners"))
        .json(&json!({"users": ["bob"]}))
        .send()
        .await
        .expect("add owner");
    assert_eq!(added.status(), 200);
    let (status, body) = cargo
        .publish_with(&bob, frame(&metadata("yanky", "0.2.0"), &file))
        .await;
    assert_eq!(status, 200, "{body}");
    let unknown = cargo
        .publisher
        .put(cargo.url("api/v1/crates/yanky/owners"))
        .json(&json!({"users": ["nobody"]}))
        .send()
        .await
        .expect("add owner");
    assert_eq!(unknown.status(), 400);

    // Search by name and description.
    let (status, _) = cargo.publish("other-thing", "0.1.0", b"// c\n").await;
    assert_eq!(status, 200);
    let found: Value = cargo
        .publisher
        .get(cargo.url("api/v1/crates?q=yank&per_page=5"))
        .send()
        .await
        .expect("search")
        .json()
        .await
        .expect("json");
    assert_eq!(found["meta"]["total"], 1);
    assert_eq!(found["crates"][0]["name"], "yanky");
    assert_eq!(found["crates"][0]["max_version"], "0.2.0");
}

#[tokio::test]
async fn bad_publishes_are_refused_and_store_nothing() {
    let cargo = Cargo::start().await;
    let good = crate_file("bad-0.1.0", "bad", "0.1.0", b"// x\n");
    let mut truncated = frame(&metadata("bad", "0.1.0"), &good);
    truncated.truncate(truncated.len() - 3);
    let mut oversized = (2u32 << 20).to_le_bytes().to_vec();
    oversized.extend_from_slice(&[b' '; 64]);
    let mismatched = crate_file("bad-0.1.0", "other", "0.1.0", b"// x\n");
    let outside = crate_file("elsewhere", "bad", "0.1.0", b"// x\n");
    let mut bad_dep = metadata("bad", "0.1.0");
    bad_dep["deps"] = json!([{"name": "x", "version_req": "not a requirement", "kind": "normal"}]);
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("empty body", Vec::new(), 400),
        ("truncated frame", truncated, 400),
        ("metadata over the limit", oversized, 413),
        ("not JSON", frame(&json!("nope"), &good), 400),
        ("bad name", frame(&metadata("9bad", "0.1.0"), &good), 400),
        ("bad version", frame(&metadata("bad", "0.1"), &good), 400),
        ("bad dependency", frame(&bad_dep, &good), 400),
        (
            "not a gzipped tar",
            frame(&metadata("bad", "0.1.0"), b"hello"),
            400,
        ),
        (
            "another crate's file",
            frame(&metadata("bad", "0.1.0"), &mismatched),
            400,
        ),
        (
            "a path outside the crate",
            frame(&metadata("bad", "0.1.0"), &outside),
            400,
        ),
    ];
    let chunks = cargo.node.stored_chunks();
    for (case, body, expected) in cases {
        let (status, response) = cargo.publish_with(&cargo.publisher, body).await;
        assert_eq!(status, expected, "{case}: {response}");
        assert!(!detail(&response).is_empty(), "{case}: {response}");
    }
    assert_eq!(cargo.index("3/b/bad").await, Err(404));
    assert_eq!(cargo.node.stored_chunks(), chunks, "nothing was stored");

    // Without a credential cargo is challenged; a read-only token is refused.
    let anonymous = reqwest::Client::new();
    let response = anonymous
        .put(cargo.url("api/v1/crates/new"))
        .body(frame(&metadata("bad", "0.1.0"), &good))
        .send()
        .await
        .expect("publish");
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .starts_with("Cargo login_url="));
    let (_, reader) = cargo.node.create_token(&["rs:read"]).await;
    let (status, _) = cargo
        .publish_with(
            &client_with(&reader),
            frame(&metadata("bad", "0.1.0"), &good),
        )
        .await;
    assert_eq!(status, 403);
    // Index paths that are not a crate's: 404, never a file elsewhere.
    for path in [
        "ba/d/bad",
        "3/x/bad",
        "3/b/BAD",
        "3/b/bad/more",
        "config.json/x",
    ] {
        assert_eq!(cargo.index(path).await, Err(404), "{path}");
    }
}
