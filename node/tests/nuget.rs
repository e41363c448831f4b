//! The NuGet format over HTTP, in process: pushes as nuget.exe sends them (multipart with a
//! quoted boundary, `X-NuGet-ApiKey`), the flat container and registrations read right after
//! (lowercased, normalized versions; inline and paged), case-insensitive ids, duplicates
//! refused with 409, unlist and relist, search and autocomplete with SemVer 2 gating, and a
//! table of bad pushes that store nothing. The real nuget.exe runs against the real binary in
//! `cli/tests/nuget_clients.rs`.

mod support;

use std::io::Write as _;

use serde_json::Value;
use support::{basic, client_with, TestNode};

/// A `.nupkg` whose root holds `{name}` with `nuspec`, and a content file.
fn nupkg(name: &str, nuspec: &str) -> Vec<u8> {
    nupkg_with(name, nuspec, &[])
}

/// [`nupkg`] with more entries (`.signature.p7s` makes it a signed package's shape).
fn nupkg_with(name: &str, nuspec: &str, extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default();
    zip.start_file(name, options).expect("zip");
    zip.write_all(nuspec.as_bytes()).expect("zip");
    zip.start_file("content/hello.txt", options).expect("zip");
    zip.write_all(b"hello").expect("zip");
    for (path, data) in extra {
        zip.start_file(*path, options).expect("zip");
        zip.write_all(data).expect("zip");
    }
    zip.finish().expect("zip").into_inner()
}

fn package(id: &str, version: &str) -> Vec<u8> {
    nupkg_with(
        &format!("{id}.nuspec"),
        &format!(
            r#"<?xml version="1.0"?><package><metadata><id>{id}</id><version>{version}</version><authors>acme</authors><description>the {id} package</description><dependencies><group targetFramework="net6.0"><dependency id="Other" version="[1.0, )" /></group></dependencies></metadata></package>"#
        ),
        // A signed package carries its PKCS#7 signature as this entry: stored and served as is.
        &[(
            ".signature.p7s",
            b"0\x82\x01\x00 a stand-in for a PKCS#7 signature",
        )],
    )
}

struct Feed {
    node: TestNode,
    token: String,
}

impl Feed {
    async fn start() -> Self {
        let node = TestNode::start().await;
        let response = node
            .http
            .post(node.url("/api/v1/repos"))
            .json(&serde_json::json!({"name": "nu", "format": "nuget"}))
            .send()
            .await
            .expect("create repo");
        assert_eq!(response.status(), 201);
        let (_, token) = node.create_token(&["nu:write", "nu:delete"]).await;
        Self { node, token }
    }

    fn url(&self, rest: &str) -> String {
        self.node.url(&format!("/nuget/nu/{rest}"))
    }

    /// A push as nuget.exe 5.8 sends it.
    async fn push(&self, body: Vec<u8>) -> (u16, String) {
        let boundary = "3b5a2a5e-8d4f-4f4e-9c1a-5b3f0a1e2d3c";
        let mut form = format!(
            "--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Disposition: form-data; name=package; filename=package.nupkg; filename*=utf-8''package.nupkg\r\n\r\n"
        )
        .into_bytes();
        form.extend_from_slice(&body);
        form.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let response = reqwest::Client::new()
            .put(self.url("api/v2/package/"))
            .header("x-nuget-apikey", &self.token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary=\"{boundary}\""),
            )
            .body(form)
            .send()
            .await
            .expect("push");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    fn reader(&self) -> reqwest::Client {
        client_with(&basic("ci", &self.token))
    }

    async fn json(&self, rest: &str) -> (u16, Value) {
        let response = self.reader().get(self.url(rest)).send().await.expect("get");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn a_push_is_served_by_the_flat_container_and_registrations_at_once() {
    let feed = Feed::start().await;
    // The service index is public (nuget.exe reads it before sending its key) and names this host.
    let index: Value = reqwest::Client::new()
        .get(feed.url("v3/index.json"))
        .send()
        .await
        .expect("index")
        .json()
        .await
        .expect("json");
    let resources = index["resources"].as_array().expect("resources");
    assert!(resources
        .iter()
        .any(|r| r["@type"] == "PackageBaseAddress/3.0.0" && r["@id"] == feed.url("v3/package/")));

    let first = package("Acme.Hello", "1.0");
    let (status, body) = feed.push(first.clone()).await;
    assert_eq!(status, 201, "{body}");
    // A duplicate: 409, whatever its bytes (nuget.exe offers -SkipDuplicate).
    let (status, body) = feed.push(first.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("SkipDuplicate"), "{body}");
    // The same id in another case is the same package.
    let (status, body) = feed.push(package("acme.hello", "2.0.0")).await;
    assert_eq!(status, 400, "{body}");

    let (status, versions) = feed.json("v3/package/ACME.HELLO/index.json").await;
    assert_eq!(status, 200);
    assert_eq!(versions["versions"], serde_json::json!(["1.0.0"]));
    let response = feed
        .reader()
        .get(feed.url("v3/package/acme.hello/1.0.0/acme.hello.1.0.0.nupkg"))
        .send()
        .await
        .expect("nupkg");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.bytes().await.expect("bytes").as_ref(),
        first.as_slice()
    );
    let nuspec = feed
        .reader()
        .get(feed.url("v3/package/acme.hello/1.0.0/acme.hello.nuspec"))
        .send()
        .await
        .expect("nuspec")
        .text()
        .await
        .expect("text");
    assert!(nuspec.contains("<id>Acme.Hello</id>"), "{nuspec}");
    let (status, _) = feed.json("v3/package/nothing/index.json").await;
    assert_eq!(status, 404, "an unknown id is a 404 (restore needs it)");

    let (status, registration) = feed.json("v3/registration/acme.hello/index.json").await;
    assert_eq!(status, 200);
    let leaf = &registration["items"][0]["items"][0];
    assert_eq!(leaf["catalogEntry"]["id"], "Acme.Hello");
    assert_eq!(leaf["catalogEntry"]["version"], "1.0.0");
    assert_eq!(leaf["catalogEntry"]["listed"], true);
    assert_eq!(
        leaf["catalogEntry"]["dependencyGroups"][0]["dependencies"][0]["id"],
        "Other"
    );
    assert_eq!(
        leaf["packageContent"],
        feed.url("v3/package/acme.hello/1.0.0/acme.hello.1.0.0.nupkg")
    );

    // Past 64 versions the index is paged; each page is fetched by its @id.
    for minor in 1..=64 {
        let (status, body) = feed
            .push(package("Acme.Hello", &format!("1.{minor}.0")))
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (_, registration) = feed.json("v3/registration/acme.hello/index.json").await;
    assert_eq!(registration["count"], 2);
    let page = &registration["items"][1];
    assert!(page.get("items").is_none(), "paged: no inline items");
    let page_url = page["@id"].as_str().expect("page url");
    let page: Value = feed
        .reader()
        .get(page_url)
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["items"][0]["catalogEntry"]["version"], "1.64.0");
    assert!(feed.node.metric("arca_nuget_requests_total").await >= 70.0);
}

#[tokio::test]
async fn unlist_relist_search_autocomplete_and_semver2_gating() {
    let feed = Feed::start().await;
    for version in ["1.0.0", "1.1.0-beta", "2.0.0-rc.1", "1.2.0"] {
        let (status, body) = feed.push(package("Acme.Hello", version)).await;
        assert_eq!(status, 201, "{version}: {body}");
    }
    let (_, found) = feed.json("v3/search?q=hello").await;
    assert_eq!(found["totalHits"], 1);
    assert_eq!(
        found["data"][0]["version"], "1.2.0",
        "no prerelease unless asked"
    );
    let (_, found) = feed.json("v3/search?q=hello&prerelease=true").await;
    let versions: Vec<_> = found["data"][0]["versions"]
        .as_array()
        .expect("versions")
        .iter()
        .map(|v| v["version"].clone())
        .collect();
    assert_eq!(
        versions,
        ["1.0.0", "1.1.0-beta", "1.2.0"],
        "SemVer 2 hidden"
    );
    let (_, found) = feed
        .json("v3/search?q=hello&prerelease=true&semVerLevel=2.0.0")
        .await;
    assert_eq!(found["data"][0]["version"], "2.0.0-rc.1");

    let unlist = reqwest::Client::new()
        .delete(feed.url("api/v2/package/Acme.Hello/1.2.0"))
        .header("x-nuget-apikey", &feed.token)
        .send()
        .await
        .expect("delete");
    assert_eq!(unlist.status(), 204);
    let (_, found) = feed.json("v3/search?q=hello").await;
    assert_eq!(
        found["data"][0]["version"], "1.0.0",
        "unlisted is not offered"
    );
    let (_, leaf) = feed.json("v3/registration/acme.hello/1.2.0.json").await;
    assert_eq!(leaf["catalogEntry"]["listed"], false);
    let (status, _) = feed.json("v3/package/acme.hello/index.json").await;
    assert_eq!(status, 200);
    let relist = reqwest::Client::new()
        .post(feed.url("api/v2/package/Acme.Hello/1.2.0"))
        .header("x-nuget-apikey", &feed.token)
        .send()
        .await
        .expect("relist");
    assert_eq!(relist.status(), 200);
    let (_, found) = feed.json("v3/search?q=hello").await;
    assert_eq!(found["data"][0]["version"], "1.2.0");

    let (_, ids) = feed.json("v3/autocomplete?q=acme").await;
    assert_eq!(ids["data"], serde_json::json!(["Acme.Hello"]));
    let (_, versions) = feed
        .json("v3/autocomplete?id=acme.hello&prerelease=true")
        .await;
    assert_eq!(
        versions["data"],
        serde_json::json!(["1.0.0", "1.1.0-beta", "1.2.0"])
    );
}

#[tokio::test]
async fn bad_pushes_are_refused_and_store_nothing() {
    let feed = Feed::start().await;
    let chunks = feed.node.stored_chunks();
    let nuspec = |id: &str, version: &str| {
        format!("<package><metadata><id>{id}</id><version>{version}</version><authors>a</authors><description>d</description></metadata></package>")
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("not a zip", b"hello".to_vec()),
        ("no nuspec", nupkg("content/x.txt", "x")),
        (
            "a nuspec in a folder",
            nupkg("sub/A.nuspec", &nuspec("A", "1.0.0")),
        ),
        ("a bad id", nupkg("..A.nuspec", &nuspec("..A", "1.0.0"))),
        ("a bad version", nupkg("A.nuspec", &nuspec("A", "one"))),
        (
            "a nuspec not named after the id",
            nupkg("B.nuspec", &nuspec("A", "1.0.0")),
        ),
        ("not XML", nupkg("A.nuspec", "<package><metadata>")),
        (
            "a DOCTYPE",
            nupkg("A.nuspec", &format!("<!DOCTYPE x>{}", nuspec("A", "1.0.0"))),
        ),
    ];
    for (case, body) in cases {
        let (status, text) = feed.push(body).await;
        assert_eq!(status, 400, "{case}: {text}");
        assert!(!text.trim().is_empty(), "{case}");
    }
    assert_eq!(feed.node.stored_chunks(), chunks, "nothing was stored");
    let (_, found) = feed.json("v3/search").await;
    assert_eq!(found["totalHits"], 0);

    // No key: 401 with a Basic challenge; a read-only key: 403.
    let response = reqwest::Client::new()
        .put(feed.url("api/v2/package/"))
        .body(package("A", "1.0.0"))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 401);
    assert!(response.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .starts_with("Basic"));
    let (_, reader) = feed.node.create_token(&["nu:read"]).await;
    let response = reqwest::Client::new()
        .put(feed.url("api/v2/package/"))
        .header("x-nuget-apikey", reader)
        .body(package("A", "1.0.0"))
        .send()
        .await
        .expect("push");
    assert_eq!(response.status(), 403);
    // Reads of a private feed are challenged so nuget.exe sends its credentials.
    let response = reqwest::Client::new()
        .get(feed.url("v3/package/a/index.json"))
        .send()
        .await
        .expect("get");
    assert_eq!(response.status(), 401);
}
