//! Authentication and authorization on every route: the bootstrap account, access tokens
//! (scopes, expiry, revocation), the registry token flow, denials (401 with the challenge the
//! client expects, 403), nothing stored when refused, rate limits, and the audit chain
//! (verified, and broken by one changed byte in RocksDB).

mod support;

use std::time::Duration;

use arca_node::auth::model::{AuthCommand, AuthOp, Scope, TokenRecord};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::{basic, client_with, TestNode};

async fn get_status(client: &reqwest::Client, url: String) -> u16 {
    client.get(url).send().await.expect("get").status().as_u16()
}

async fn post_status(client: &reqwest::Client, url: String) -> u16 {
    client
        .post(url)
        .send()
        .await
        .expect("post")
        .status()
        .as_u16()
}

async fn create_user(node: &TestNode, name: &str, password: &str) -> reqwest::Response {
    node.http
        .post(node.url("/api/v1/users"))
        .json(&json!({ "name": name, "password": password }))
        .send()
        .await
        .expect("create user")
}

async fn grant(node: &TestNode, principal: &str, pattern: &str, role: &str) -> reqwest::Response {
    node.http
        .post(node.url("/api/v1/roles"))
        .json(&json!({ "principal": principal, "pattern": pattern, "role": role }))
        .send()
        .await
        .expect("grant")
}

/// An access token that expired an hour ago (the API refuses to make one, so it is proposed
/// directly).
async fn expired_token(node: &TestNode) -> String {
    let (id, token) = arca_node::auth::credentials::new_token();
    let now = arca_node::metadata::model::now_ms();
    let command = AuthCommand {
        at_ms: now,
        op: AuthOp::CreateToken {
            token: TokenRecord {
                id,
                owner: "admin".into(),
                hash: arca_node::auth::credentials::token_hash(&token),
                scopes: vec![Scope::parse("**:admin").expect("scope")],
                description: String::new(),
                created_at_ms: now - 7_200_000,
                expires_at_ms: now - 3_600_000,
                revoked_at_ms: None,
                last_used_ms: None,
            },
        },
    };
    node.node()
        .service
        .propose_format(&command, None)
        .await
        .expect("propose");
    token
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Needs {
    Public,
    Authenticated,
    Read,
    Write,
    ClusterAdmin,
}

struct Route {
    method: Method,
    /// `{v}` is replaced by the credential variant, so every variant writes its own path.
    path: &'static str,
    body: Option<Value>,
    needs: Needs,
    registry: bool,
}

fn route(method: Method, path: &'static str, needs: Needs) -> Route {
    Route {
        method,
        path,
        body: None,
        needs,
        registry: path.starts_with("/v2"),
    }
}

fn routes() -> Vec<Route> {
    let mut routes = vec![
        route(Method::GET, "/healthz", Needs::Public),
        route(Method::GET, "/metrics", Needs::Public),
        route(Method::PUT, "/files/builds/{v}.bin", Needs::Write),
        route(Method::GET, "/files/builds/seed.bin", Needs::Read),
        route(Method::HEAD, "/files/builds/seed.bin", Needs::Read),
        route(Method::DELETE, "/files/builds/seed-{v}.bin", Needs::Write),
        route(Method::GET, "/api/v1/repos/builds", Needs::Read),
        route(Method::GET, "/api/v1/repos/builds/files", Needs::Read),
        route(Method::GET, "/api/v1/repos", Needs::Authenticated),
        route(Method::GET, "/api/v1/auth/whoami", Needs::Authenticated),
        route(Method::GET, "/api/v1/tokens", Needs::Authenticated),
        route(Method::GET, "/api/v1/users", Needs::ClusterAdmin),
        route(Method::GET, "/api/v1/roles", Needs::ClusterAdmin),
        route(Method::GET, "/api/v1/audit", Needs::ClusterAdmin),
        route(Method::GET, "/api/v1/divergent", Needs::ClusterAdmin),
        route(Method::GET, "/v2/", Needs::Authenticated),
        route(Method::GET, "/v2/images/app/tags/list", Needs::Read),
        route(Method::POST, "/v2/images/app/blobs/uploads/", Needs::Write),
    ];
    let mut create = route(Method::POST, "/api/v1/repos", Needs::ClusterAdmin);
    create.body = Some(json!({ "name": "made-{v}", "format": "generic" }));
    routes.push(create);
    let mut access = route(Method::PUT, "/api/v1/repos/builds/access", Needs::Write);
    access.body = Some(json!({ "anonymous_read": false }));
    routes.push(access);
    routes
}

/// What a variant may do: (authenticated, reads builds, writes builds, cluster admin).
fn expected(variant: &str, needs: Needs) -> StatusClass {
    if needs == Needs::Public {
        return StatusClass::Allowed;
    }
    let (authenticated, reads, writes, admin) = match variant {
        "none" => (false, false, false, false),
        "bad" | "expired" | "revoked" | "forged-jwt" => return StatusClass::Unauthorized,
        "other-repo" => (true, false, false, false),
        "read-only" => (true, true, false, false),
        "valid" => (true, true, true, true),
        other => panic!("variant {other}"),
    };
    let allowed = match needs {
        Needs::Public => true,
        Needs::Authenticated => authenticated,
        Needs::Read => reads,
        Needs::Write => writes,
        Needs::ClusterAdmin => admin,
    };
    match (allowed, authenticated) {
        (true, _) => StatusClass::Allowed,
        (false, false) => StatusClass::Unauthorized,
        (false, true) => StatusClass::Forbidden,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StatusClass {
    Allowed,
    Unauthorized,
    Forbidden,
}

async fn error_code(route: &Route, response: reqwest::Response) -> String {
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if route.registry {
        body["errors"][0]["code"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    } else {
        body["code"].as_str().unwrap_or_default().to_string()
    }
}

#[tokio::test]
async fn every_route_refuses_what_the_credential_does_not_allow_and_stores_nothing() {
    let node = TestNode::start_with(|config| {
        // The matrix sends many bad credentials from one address: not this test's subject.
        config.auth.max_failures = 100_000;
    })
    .await;
    node.create_repo("builds", false).await;
    node.create_oci_repo("images", false).await;
    assert_eq!(
        node.put("builds", "seed.bin", b"seed".to_vec())
            .await
            .status(),
        201
    );
    let variants = [
        "none",
        "bad",
        "expired",
        "revoked",
        "forged-jwt",
        "other-repo",
        "read-only",
        "valid",
    ];
    for variant in variants {
        assert_eq!(
            node.put("builds", &format!("seed-{variant}.bin"), b"s".to_vec())
                .await
                .status(),
            201
        );
    }
    let (_, other) = node.create_token(&["other:write"]).await;
    let (_, read_only) = node.create_token(&["builds:read", "images:read"]).await;
    let (_, valid) = node.create_token(&["*:cluster-admin"]).await;
    let (revoked_id, revoked) = node.create_token(&["**:admin"]).await;
    let response = node
        .http
        .delete(node.url(&format!("/api/v1/tokens/{revoked_id}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
    let expired = expired_token(&node).await;
    // A JWT signed with a key this cluster does not hold.
    let forged = {
        let key = arca_node::auth::credentials::new_signing_key(1);
        let now = chrono::Utc::now().timestamp();
        arca_node::auth::credentials::sign(
            &key,
            &arca_node::auth::credentials::Claims {
                iss: "arca".into(),
                sub: "user:admin".into(),
                aud: "arca".into(),
                exp: now + 300,
                nbf: now - 1,
                iat: now,
                jti: "x".into(),
                kind: arca_node::auth::credentials::TokenKind::Session,
                access: vec![],
                tid: None,
            },
        )
        .expect("sign")
    };
    let clients = [
        ("none", reqwest::Client::new()),
        ("bad", client_with(&basic("admin", "not-the-password"))),
        ("expired", client_with(&format!("Bearer {expired}"))),
        ("revoked", client_with(&basic("__token__", &revoked))),
        ("forged-jwt", client_with(&format!("Bearer {forged}"))),
        ("other-repo", client_with(&format!("Bearer {other}"))),
        ("read-only", client_with(&basic("ci", &read_only))),
        ("valid", client_with(&format!("Bearer {valid}"))),
    ];
    let mut checked = 0;
    for route in routes() {
        for (variant, client) in &clients {
            let path = route.path.replace("{v}", variant);
            let mut request = client.request(route.method.clone(), node.url(&path));
            if let Some(body) = &route.body {
                let text = body.to_string().replace("{v}", variant);
                request = request
                    .header("content-type", "application/json")
                    .body(text);
            } else if route.method == Method::PUT {
                request = request.body(format!("content of {variant}"));
            }
            let response = request.send().await.expect("send");
            let status = response.status();
            let what = format!("{} {path} as {variant}: {status}", route.method);
            let challenge = response
                .headers()
                .get("www-authenticate")
                .map(|v| v.to_str().expect("ascii").to_string());
            match expected(variant, route.needs) {
                StatusClass::Allowed => {
                    assert!(
                        status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                        "{what}: should be allowed"
                    );
                    assert!(status.as_u16() < 500, "{what}");
                }
                StatusClass::Unauthorized => {
                    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}");
                    let challenge = challenge.unwrap_or_else(|| panic!("{what}: no challenge"));
                    if route.registry {
                        assert!(
                            challenge.starts_with("Bearer realm=\"http://")
                                && challenge.contains("/v2/token\",service=\"arca\""),
                            "{what}: {challenge}"
                        );
                        if route.needs == Needs::Read {
                            assert!(
                                challenge.contains("scope=\"repository:images/app:pull\""),
                                "{what}: {challenge}"
                            );
                        }
                    } else {
                        assert!(challenge.starts_with("Basic realm="), "{what}: {challenge}");
                    }
                    if route.method != Method::HEAD {
                        assert_eq!(error_code(&route, response).await, "UNAUTHORIZED", "{what}");
                    }
                }
                StatusClass::Forbidden => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{what}");
                    assert!(challenge.is_none(), "{what}: a 403 has no challenge");
                    if route.method != Method::HEAD {
                        assert_eq!(error_code(&route, response).await, "DENIED", "{what}");
                    }
                }
            }
            checked += 1;
        }
    }
    assert_eq!(checked, routes().len() * clients.len());

    // Nothing a refused request sent was stored; what the valid one sent was.
    for variant in variants {
        let stored = node
            .get(&format!("/files/builds/{variant}.bin"))
            .await
            .status();
        let seed = node
            .get(&format!("/files/builds/seed-{variant}.bin"))
            .await
            .status();
        let repo = node
            .get(&format!("/api/v1/repos/made-{variant}"))
            .await
            .status();
        if variant == "valid" {
            assert_eq!(stored, 200);
            assert_eq!(seed, 404, "the valid delete happened");
            assert_eq!(repo, 200);
        } else {
            assert_eq!(stored, 404, "{variant} stored a file");
            assert_eq!(seed, 200, "{variant} deleted a file");
            assert_eq!(repo, 404, "{variant} created a repository");
        }
    }

    // Every denial was counted, by route and reason.
    assert!(node.metric("arca_auth_denied_total").await >= 100.0);
    assert!(node.metric("arca_auth_failures_total").await >= 20.0);
}

#[tokio::test]
async fn the_first_start_creates_admin_with_a_private_password_file_and_no_default() {
    let node = TestNode::start().await;
    let path = node.config.data_dir.join("initial-admin-password");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("password file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    assert!(node.admin_password.len() >= 20);
    // Anonymous requests get nothing; the password signs in; a guessed one does not.
    assert_eq!(get_status(&node.anon, node.url("/api/v1/repos")).await, 401);
    for guess in ["admin", "password", "arca", ""] {
        let response = client_with(&basic("admin", guess))
            .get(node.url("/api/v1/auth/whoami"))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 401, "{guess:?}");
    }
    let me = node.json("/api/v1/auth/whoami").await;
    assert_eq!(me["principal"], "user:admin");
    assert_eq!(me["cluster_admin"], true);
    // A restart does not create another account or password.
    let mut node = node;
    let before = std::fs::read_to_string(&path).expect("read");
    node.restart().await;
    assert_eq!(std::fs::read_to_string(&path).expect("read"), before);
    let users = node.json("/api/v1/users").await;
    assert_eq!(users["users"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn roles_bind_users_and_teams_to_repository_patterns_and_anonymous_read_opens_pulls() {
    let node = TestNode::start().await;
    node.create_repo("builds", false).await;
    node.create_repo("public", false).await;
    assert_eq!(
        node.put("public", "a.txt", b"hello".to_vec())
            .await
            .status(),
        201
    );
    let create = |name: &str| {
        node.http
            .post(node.url("/api/v1/users"))
            .json(&json!({ "name": name, "password": "a long enough password" }))
            .send()
    };
    assert_eq!(create("alice").await.expect("create").status(), 200);
    assert_eq!(create("bob").await.expect("create").status(), 200);
    assert_eq!(create("alice").await.expect("create").status(), 409);
    let bad = node
        .http
        .post(node.url("/api/v1/users"))
        .json(&json!({ "name": "robot$x", "password": "a long enough password" }))
        .send()
        .await
        .expect("create");
    assert_eq!(bad.status(), 400);
    let alice = client_with(&basic("alice", "a long enough password"));
    let bob = client_with(&basic("bob", "a long enough password"));
    let put = |client: &reqwest::Client, path: &str| {
        client
            .put(node.url(&format!("/files/{path}")))
            .body("x")
            .send()
    };
    assert_eq!(put(&alice, "builds/a").await.expect("put").status(), 403);
    let granted = grant(&node, "user:alice", "builds/**", "write").await;
    assert_eq!(granted.status(), 200);
    assert_eq!(put(&alice, "builds/a").await.expect("put").status(), 201);
    assert_eq!(
        alice
            .delete(node.url("/files/builds/a"))
            .send()
            .await
            .expect("delete")
            .status(),
        403,
        "write does not include delete"
    );
    // A team's role applies to its members.
    assert_eq!(put(&bob, "builds/b").await.expect("put").status(), 403);
    let team = node
        .http
        .put(node.url("/api/v1/teams/release"))
        .json(&json!({ "members": ["bob"] }))
        .send()
        .await
        .expect("team");
    assert_eq!(team.status(), 200);
    let granted = grant(&node, "team:release", "build*", "admin").await;
    assert_eq!(granted.status(), 200);
    assert_eq!(put(&bob, "builds/b").await.expect("put").status(), 201);
    assert_eq!(
        bob.delete(node.url("/files/builds/b"))
            .send()
            .await
            .expect("delete")
            .status(),
        204
    );
    // Revoking the role takes the permission away.
    let revoke = node
        .http
        .delete(node.url("/api/v1/roles"))
        .query(&[
            ("principal", "user:alice"),
            ("pattern", "builds/**"),
            ("role", "write"),
        ])
        .send()
        .await
        .expect("revoke");
    assert_eq!(revoke.status(), 200);
    assert_eq!(put(&alice, "builds/c").await.expect("put").status(), 403);
    // Private by default; anonymous_read opens pulls (never pushes) to everyone.
    assert_eq!(
        get_status(&node.anon, node.url("/files/public/a.txt")).await,
        401
    );
    let open = node
        .http
        .put(node.url("/api/v1/repos/public/access"))
        .json(&json!({ "anonymous_read": true }))
        .send()
        .await
        .expect("open");
    assert_eq!(open.status(), 200);
    let pulled = node
        .anon
        .get(node.url("/files/public/a.txt"))
        .send()
        .await
        .expect("get");
    assert_eq!(pulled.status(), 200);
    assert_eq!(pulled.text().await.expect("body"), "hello");
    assert_eq!(
        node.anon
            .put(node.url("/files/public/b.txt"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status(),
        401
    );
    assert_eq!(
        alice
            .put(node.url("/files/public/b.txt"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status(),
        403
    );
    // The repository list shows what the caller may read.
    let listed: Value = alice
        .get(node.url("/api/v1/repos"))
        .send()
        .await
        .expect("list")
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = listed["repositories"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names, ["public"]);
}

#[tokio::test]
async fn tokens_are_shown_once_hashed_at_rest_and_can_not_outgrow_their_creator() {
    let node = TestNode::start().await;
    node.create_repo("builds", false).await;
    let (id, token) = node.create_token(&["builds/**:write"]).await;
    assert!(token.starts_with("arca_"));
    let listed = node.json("/api/v1/tokens").await;
    let text = listed.to_string();
    assert!(text.contains(&id));
    assert!(!text.contains(&token[5..]), "a listing shows the secret");
    // At rest only the hash is kept: no key or value of the state machine holds the secret.
    let db = node.node().service.catalog.db();
    let cf = db.cf_handle("sm").expect("state machine column family");
    let secret = &token.as_bytes()[5..];
    let mut scanned = 0;
    for item in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
        let (key, value) = item.expect("read");
        scanned += 1;
        assert!(
            !key.windows(secret.len()).any(|w| w == secret)
                && !value.windows(secret.len()).any(|w| w == secret),
            "the token's secret is stored"
        );
    }
    assert!(scanned > 10);
    let scoped = client_with(&format!("Bearer {token}"));
    assert_eq!(
        scoped
            .put(node.url("/files/builds/x"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status(),
        201
    );
    // A scoped token cannot mint a broader one, nor one for another account.
    let broader = scoped
        .post(node.url("/api/v1/tokens"))
        .json(&json!({ "scopes": ["*:cluster-admin"] }))
        .send()
        .await
        .expect("create");
    assert_eq!(broader.status(), 403);
    let narrower = scoped
        .post(node.url("/api/v1/tokens"))
        .json(&json!({ "scopes": ["builds:read"] }))
        .send()
        .await
        .expect("create");
    assert_eq!(narrower.status(), 200);
    // Expiry beyond the configured maximum is refused.
    let too_long = node
        .http
        .post(node.url("/api/v1/tokens"))
        .json(&json!({ "scopes": ["builds:read"], "expires_in_days": 10_000 }))
        .send()
        .await
        .expect("create");
    assert_eq!(too_long.status(), 400);
    // Use is recorded (batched, within a minute) and revocation is immediate on this node.
    let response = node
        .http
        .delete(node.url(&format!("/api/v1/tokens/{id}")))
        .send()
        .await
        .expect("revoke");
    assert_eq!(response.status(), 200);
    assert_eq!(
        scoped
            .put(node.url("/files/builds/y"))
            .body("y")
            .send()
            .await
            .expect("put")
            .status(),
        401
    );
}

#[tokio::test]
async fn failed_logins_are_rate_limited_per_source_with_retry_after() {
    let node = TestNode::start_with(|config| {
        config.auth.max_failures = 3;
        config.auth.failure_window_secs = 60;
    })
    .await;
    let created = create_user(&node, "bob", "bob's long password").await;
    assert_eq!(created.status(), 200);
    let (_, token) = node.create_token(&["*:read"]).await;
    let wrong = client_with(&basic("mallory", "wrong password"));
    for _ in 0..3 {
        let status = get_status(&wrong, node.url("/api/v1/repos")).await;
        assert_eq!(status, 401);
    }
    let limited = wrong
        .get(node.url("/api/v1/repos"))
        .send()
        .await
        .expect("get");
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=60).contains(&retry_after));
    // From that address, a password not verified before gets no guess either, right or not...
    let bob = client_with(&basic("bob", "bob's long password"));
    assert_eq!(get_status(&bob, node.url("/api/v1/repos")).await, 429);
    // ... while credentials that cannot be guessed go on: a token, a password proven before.
    let with_token = client_with(&format!("Bearer {token}"));
    assert_eq!(
        get_status(&with_token, node.url("/api/v1/repos")).await,
        200
    );
    assert_eq!(get_status(&node.http, node.url("/api/v1/repos")).await, 200);
    assert!(node.metric("arca_auth_failures_total").await >= 3.0);
}

#[tokio::test]
async fn the_registry_token_endpoint_grants_the_held_subset_and_refreshes() {
    let node = TestNode::start().await;
    node.create_oci_repo("team", false).await;
    node.create_oci_repo("other", false).await;
    let create = create_user(&node, "alice", "a long enough password").await;
    assert_eq!(create.status(), 200);
    let granted = grant(&node, "user:alice", "team", "write").await;
    assert_eq!(granted.status(), 200);
    // GET with Basic, two scopes (a cross-repository mount), an offline token.
    let response = node
        .anon
        .get(node.url("/v2/token"))
        .basic_auth("alice", Some("a long enough password"))
        .query(&[
            ("service", "arca"),
            ("scope", "repository:team/app:pull,push"),
            ("scope", "repository:other/base:pull"),
            ("offline_token", "true"),
            ("client_id", "docker"),
        ])
        .send()
        .await
        .expect("token");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().expect("expires_in") >= 60);
    assert!(body["issued_at"].is_string());
    let refresh = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_string();
    let bearer = client_with(&format!(
        "Bearer {}",
        body["token"].as_str().expect("token")
    ));
    assert_eq!(get_status(&bearer, node.url("/v2/")).await, 200);
    assert_eq!(
        get_status(&bearer, node.url("/v2/team/app/tags/list")).await,
        404,
        "allowed (the image has no tags yet)"
    );
    // Not granted on `other`: the registry answers 403, ending the retry loop.
    let denied = bearer
        .get(node.url("/v2/other/base/tags/list"))
        .send()
        .await
        .expect("tags");
    assert_eq!(denied.status(), 403);
    // A scope the token lacks but the roles allow: 401 insufficient_scope, naming it.
    let insufficient = bearer
        .get(node.url("/v2/team/other/tags/list"))
        .send()
        .await
        .expect("tags");
    assert_eq!(insufficient.status(), 401);
    let challenge = insufficient.headers()["www-authenticate"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(
        challenge.contains("scope=\"repository:team/other:pull\""),
        "{challenge}"
    );
    assert!(
        challenge.contains("error=\"insufficient_scope\""),
        "{challenge}"
    );
    // POST, refresh_token grant (what skopeo and docker do after login).
    let response = node
        .anon
        .post(node.url("/v2/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh.as_str()),
            ("service", "arca"),
            ("client_id", "containers/image"),
            ("scope", "repository:team/app:pull"),
        ])
        .send()
        .await
        .expect("refresh");
    assert_eq!(response.status(), 200);
    // POST, password grant; a wrong password is a JSON 401.
    let response = node
        .anon
        .post(node.url("/v2/token"))
        .form(&[
            ("grant_type", "password"),
            ("username", "alice"),
            ("password", "nope"),
            ("service", "arca"),
        ])
        .send()
        .await
        .expect("password");
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    // Anonymous: a token with no access, accepted by `GET /v2/`.
    let response = node
        .anon
        .get(node.url("/v2/token"))
        .query(&[("service", "arca"), ("scope", "repository:team/app:pull")])
        .send()
        .await
        .expect("anonymous");
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.expect("json");
    let anonymous = client_with(&format!(
        "Bearer {}",
        body["token"].as_str().expect("token")
    ));
    assert_eq!(get_status(&anonymous, node.url("/v2/")).await, 200);
    assert_eq!(
        get_status(&anonymous, node.url("/v2/team/app/tags/list")).await,
        401
    );
}

async fn audit(node: &TestNode, query: &str) -> Vec<Value> {
    node.json(&format!("/api/v1/audit?{query}")).await["records"]
        .as_array()
        .expect("records")
        .clone()
}

#[tokio::test]
async fn the_audit_chain_records_writes_denials_and_logins_and_names_a_tampered_record() {
    let mut node = TestNode::start().await;
    node.create_repo("builds", false).await;
    assert_eq!(
        node.put("builds", "a.bin", b"a".to_vec()).await.status(),
        201
    );
    // A flood of denials from one address becomes a handful of records with counts.
    for _ in 0..200 {
        let status = node
            .anon
            .put(node.url("/files/builds/x"))
            .body("x")
            .send()
            .await
            .expect("put")
            .status();
        assert_eq!(status, 401);
    }
    let denials = support::wait_for(
        "the denials are audited",
        Duration::from_secs(10),
        || async {
            let records = audit(&node, "outcome=denied&limit=1000").await;
            let total: u64 = records
                .iter()
                .map(|r| r["count"].as_u64().unwrap_or(0))
                .sum();
            (total >= 200).then_some(records)
        },
    )
    .await;
    assert!(
        denials.len() <= 20,
        "{} records for 200 denials",
        denials.len()
    );
    let writes = audit(&node, "principal=user:admin&repo=builds").await;
    assert!(
        writes
            .iter()
            .any(|r| r["resource"] == "/files/builds/a.bin" && r["outcome"] == "ok"),
        "{writes:?}"
    );
    let verified = node.json("/api/v1/audit/verify").await;
    assert_eq!(verified["ok"], true, "{verified}");
    let records = verified["records"].as_u64().expect("records");
    assert!(records >= 3);

    // Change one byte of one record in RocksDB: verify names that record.
    let seq = 2u64;
    node.stop().await;
    {
        let db = arca_node::db::open_db(&node.config.data_dir.join("db")).expect("open");
        let cf = db.cf_handle("sm").expect("state machine column family");
        let mut key = b"audit/r/".to_vec();
        key.extend_from_slice(&seq.to_be_bytes());
        let mut value = db.get_cf(cf, &key).expect("get").expect("record 2");
        let text = String::from_utf8_lossy(&value).to_string();
        let at = text
            .find("/files")
            .or_else(|| text.find("ok"))
            .expect("a field to change");
        value[at + 1] ^= 0x01;
        db.put_cf(cf, &key, &value).expect("put");
        db.flush_cf(cf).expect("flush");
    }
    node.restart().await;
    let verified = node.json("/api/v1/audit/verify").await;
    assert_eq!(verified["ok"], false, "{verified}");
    assert_eq!(verified["broken_at"], seq, "{verified}");
}

#[tokio::test]
async fn secrets_never_appear_in_responses_listings_or_the_audit_log() {
    let node = TestNode::start().await;
    node.create_repo("builds", false).await;
    let (_, token) = node.create_token(&["builds:write"]).await;
    let client = client_with(&format!("Bearer {token}"));
    assert_eq!(
        client
            .put(node.url("/files/builds/f"))
            .body("f")
            .send()
            .await
            .expect("put")
            .status(),
        201
    );
    let wrong = client_with(&basic("admin", "a wrong password that must not be logged"));
    assert_eq!(get_status(&wrong, node.url("/api/v1/users")).await, 401);
    support::wait_for("the denial is audited", Duration::from_secs(10), || async {
        (!audit(&node, "outcome=denied").await.is_empty()).then_some(())
    })
    .await;
    let mut everything = String::new();
    for path in [
        "/api/v1/audit?limit=1000",
        "/api/v1/tokens",
        "/api/v1/users",
        "/api/v1/roles",
    ] {
        everything.push_str(&node.json(path).await.to_string());
    }
    everything.push_str(&node.get("/metrics").await.text().await.expect("metrics"));
    for secret in [
        token.as_str(),
        &token[5..],
        &node.admin_password,
        "a wrong password that must not be logged",
    ] {
        assert!(!everything.contains(secret), "a secret leaked");
    }
}

#[tokio::test]
async fn retention_drops_the_oldest_audit_records_and_the_chain_still_verifies_from_the_oldest_kept(
) {
    let node = TestNode::start().await;
    node.create_repo("builds", false).await;
    for i in 0..5 {
        assert_eq!(
            node.put("builds", &format!("f{i}"), vec![i]).await.status(),
            201
        );
    }
    let before = support::wait_for(
        "the writes are audited",
        Duration::from_secs(10),
        || async {
            let report = node.json("/api/v1/audit/verify").await;
            (report["records"].as_u64().unwrap_or(0) >= 6).then_some(report)
        },
    )
    .await;
    assert_eq!(before["first_seq"], 1);
    let command = arca_node::auth::model::AuditCommand::Prune {
        at_ms: arca_node::metadata::model::now_ms(),
        before_ms: arca_node::metadata::model::now_ms() + 1,
        max: 3,
    };
    node.node()
        .service
        .propose_format(&command, None)
        .await
        .expect("prune");
    let after = node.json("/api/v1/audit/verify").await;
    assert_eq!(after["ok"], true, "{after}");
    assert_eq!(after["first_seq"], 4, "{after}");
    let oldest = audit(&node, "limit=1").await;
    assert_eq!(oldest[0]["seq"], 4);
}

#[tokio::test]
async fn a_rotated_signing_key_signs_new_tokens_and_the_previous_one_still_verifies() {
    let node = TestNode::start().await;
    let login: Value = node
        .http
        .post(node.url("/api/v1/auth/login"))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let old_session = client_with(&format!(
        "Bearer {}",
        login["token"].as_str().expect("token")
    ));
    let rotated = node
        .http
        .post(node.url("/api/v1/auth/signing-keys"))
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status(), 200);
    let kid: Value = rotated.json().await.expect("json");
    let login: Value = node
        .http
        .post(node.url("/api/v1/auth/login"))
        .send()
        .await
        .expect("login")
        .json()
        .await
        .expect("json");
    let new_token = login["token"].as_str().expect("token");
    let header = jsonwebtoken::decode_header(new_token).expect("a JWT");
    assert_eq!(header.kid.as_deref(), kid["kid"].as_str());
    let new_session = client_with(&format!("Bearer {new_token}"));
    for client in [&old_session, &new_session] {
        let status = get_status(client, node.url("/api/v1/auth/whoami")).await;
        assert_eq!(status, 200);
    }
    // Two rotations later the first key is gone, and so are the tokens it signed.
    for _ in 0..2 {
        let status = post_status(&node.http, node.url("/api/v1/auth/signing-keys")).await;
        assert_eq!(status, 200);
    }
    let status = get_status(&old_session, node.url("/api/v1/auth/whoami")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn an_audit_batch_proposed_again_after_a_lost_answer_is_recorded_once() {
    let node = TestNode::start().await;
    let event = |number: u64| arca_node::auth::model::AuditEvent {
        at_ms: arca_node::metadata::model::now_ms(),
        principal: "anonymous".into(),
        token_id: None,
        source: "192.0.2.1".into(),
        region: "local".into(),
        node: 1,
        action: "PUT".into(),
        resource: "/files/x/y".into(),
        repo: Some("x".into()),
        outcome: "denied:no_credential".into(),
        request_id: format!("r{number}"),
        count: 1,
        origin: "a-test-process".into(),
        number,
    };
    let batch = arca_node::auth::model::AuditCommand::Append {
        at_ms: arca_node::metadata::model::now_ms(),
        events: vec![event(1), event(2)],
    };
    let service = &node.node().service;
    let first = service.propose_format(&batch, None).await.expect("append");
    assert!(
        matches!(first, arca_node::auth::model::AuthOutcome::Audited { .. }),
        "{first:?}"
    );
    let again = service.propose_format(&batch, None).await.expect("append");
    assert_eq!(again, arca_node::auth::model::AuthOutcome::Unchanged);
    let records = audit(&node, "principal=anonymous&limit=100").await;
    let ours: Vec<_> = records
        .iter()
        .filter(|r| r["source"] == "192.0.2.1")
        .collect();
    assert_eq!(ours.len(), 2, "{records:?}");
    // A later event of the same process is recorded.
    let next = arca_node::auth::model::AuditCommand::Append {
        at_ms: arca_node::metadata::model::now_ms(),
        events: vec![event(2), event(3)],
    };
    service.propose_format(&next, None).await.expect("append");
    let records = audit(&node, "principal=anonymous&limit=100").await;
    assert_eq!(
        records
            .iter()
            .filter(|r| r["source"] == "192.0.2.1")
            .count(),
        3
    );
    assert_eq!(node.json("/api/v1/audit/verify").await["ok"], true);
}
