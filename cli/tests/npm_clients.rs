//! The real npm client (npm 11 on node 20, as the machine has it) against the real binary:
//! `npm publish` (scoped), `npm install` and `npm ci` against the lockfile it wrote (with
//! audit on: the bulk advisory endpoint answers, so nothing warns), `npm dist-tag`, `npm
//! deprecate`, `npm unpublish`, `npm whoami`, and `npm login` in both flows (the web flow
//! without a terminal, approved over HTTP; the legacy one typed into a tmux pane). In a
//! region of three nodes an install through another node reads the publish at once, and a
//! mirror region serves it and refuses a publish with a 403 npm prints.
//!
//! Every npm runs with its own user config, global config, cache and HOME, so this machine's
//! `~/.npmrc` (audit off, a cafile) does not leak in.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use arca_chaos::{wait_until, ArcaProcess, ProcessOptions, Region};
use serde_json::{json, Value};

mod clients;

use clients::{
    access_token, block_on, create_repo, must_ok, poll_until, region_options, text_of, ARCA,
};

/// One npm user: a directory with its own npmrc pointing at one registry URL.
struct NpmUser {
    dir: PathBuf,
    registry: String,
}

impl NpmUser {
    /// `token`: written as the registry's `_authToken` (npm then sends it as Bearer on every
    /// request to that URL prefix).
    fn new(dir: PathBuf, registry: &str, token: Option<&str>) -> Self {
        std::fs::create_dir_all(dir.join("home")).expect("home");
        let user = Self {
            dir,
            registry: registry.to_string(),
        };
        user.write_npmrc(token);
        std::fs::write(user.dir.join("globalrc"), "").expect("global npmrc");
        user
    }

    fn npmrc(&self) -> PathBuf {
        self.dir.join("npmrc")
    }

    fn write_npmrc(&self, token: Option<&str>) {
        let nerf = self.registry.trim_start_matches("http:");
        let mut text = format!(
            "registry={}\nupdate-notifier=false\nfund=false\naudit=true\nfetch-retries=0\n",
            self.registry
        );
        if let Some(token) = token {
            text.push_str(&format!("{nerf}:_authToken={token}\n"));
        }
        std::fs::write(self.npmrc(), text).expect("npmrc");
    }

    fn npm(&self, cwd: &Path) -> Command {
        let mut command = Command::new("npm");
        command
            .current_dir(cwd)
            .env("HOME", self.dir.join("home"))
            .env("npm_config_userconfig", self.npmrc())
            .env("npm_config_globalconfig", self.dir.join("globalrc"))
            .env("npm_config_cache", self.dir.join("cache"))
            .env_remove("NPM_TOKEN")
            .env_remove("npm_config_registry");
        command
    }

    fn run(&self, cwd: &Path, args: &[&str]) -> Output {
        self.npm(cwd).args(args).output().expect("run npm")
    }
}

/// A package directory: `package.json` for `name@version` whose `index.js` exports `value`.
fn package(dir: &Path, name: &str, version: &str, value: &str) -> PathBuf {
    let path = dir.join(format!("pkg-{version}-{value}"));
    std::fs::create_dir_all(&path).expect("package dir");
    std::fs::write(
        path.join("package.json"),
        json!({"name": name, "version": version, "main": "index.js", "description": "hello from arca",
               "license": "MIT", "publishConfig": {"access": "public"}})
        .to_string(),
    )
    .expect("package.json");
    std::fs::write(
        path.join("index.js"),
        format!("module.exports = {value:?};\n"),
    )
    .expect("index.js");
    std::fs::write(path.join("README.md"), format!("# {name}\n")).expect("readme");
    path
}

/// A consumer project with no dependencies yet.
fn app(dir: &Path, label: &str) -> PathBuf {
    let path = dir.join(label);
    std::fs::create_dir_all(&path).expect("app dir");
    std::fs::write(
        path.join("package.json"),
        json!({"name": label, "version": "1.0.0", "private": true}).to_string(),
    )
    .expect("package.json");
    path
}

fn installed(app: &Path, name: &str) -> String {
    std::fs::read_to_string(app.join("node_modules").join(name).join("index.js"))
        .unwrap_or_default()
}

fn packument(base: &str, token: &str, name: &str) -> Value {
    block_on(async {
        reqwest::Client::new()
            .get(format!("{base}/npm/js/{}", name.replace('/', "%2f")))
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .expect("packument")
            .json()
            .await
            .expect("json")
    })
}

#[test]
fn npm_publishes_installs_tags_deprecates_unpublishes_and_logs_in() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let session = server.admin_token_blocking();
    create_repo(&base, &session, "js", "npm");
    let token = access_token(&base, &session, &["js:delete", "js:write"]);
    let registry = format!("{base}/npm/js/");
    let user = NpmUser::new(dir.path().join("publisher"), &registry, Some(&token));

    let one = package(dir.path(), "@acme/hello", "1.0.0", "one");
    must_ok("npm publish", user.run(&one, &["publish"]));
    assert_eq!(
        must_ok("npm whoami", user.run(dir.path(), &["whoami"])).trim(),
        "admin"
    );

    // Install right after the publish, with audit on: the advisory endpoint answers {}.
    let consumer = app(dir.path(), "consumer");
    let text = must_ok(
        "npm install",
        user.run(&consumer, &["install", "@acme/hello@1.0.0"]),
    );
    assert!(
        !text.contains("npm warn audit") && !text.contains("npm WARN audit"),
        "{text}"
    );
    assert_eq!(
        installed(&consumer, "@acme/hello"),
        "module.exports = \"one\";\n"
    );
    let lock: Value = serde_json::from_str(
        &std::fs::read_to_string(consumer.join("package-lock.json")).expect("lockfile"),
    )
    .expect("lock json");
    let locked = &lock["packages"]["node_modules/@acme/hello"];
    assert_eq!(
        locked["resolved"],
        format!("{registry}@acme/hello/-/hello-1.0.0.tgz"),
        "{locked}"
    );
    assert!(locked["integrity"]
        .as_str()
        .unwrap_or_default()
        .starts_with("sha512-"));
    // npm ci from the lockfile, into a clean tree.
    std::fs::remove_dir_all(consumer.join("node_modules")).expect("clean");
    must_ok("npm ci", user.run(&consumer, &["ci"]));
    assert_eq!(
        installed(&consumer, "@acme/hello"),
        "module.exports = \"one\";\n"
    );

    // A second version, then dist-tags.
    let two = package(dir.path(), "@acme/hello", "1.1.0", "two");
    must_ok("npm publish 1.1.0", user.run(&two, &["publish"]));
    must_ok(
        "npm dist-tag add",
        user.run(
            dir.path(),
            &["dist-tag", "add", "@acme/hello@1.0.0", "stable"],
        ),
    );
    let tags = must_ok(
        "npm dist-tag ls",
        user.run(dir.path(), &["dist-tag", "ls", "@acme/hello"]),
    );
    assert!(
        tags.contains("stable: 1.0.0") && tags.contains("latest: 1.1.0"),
        "{tags}"
    );
    must_ok(
        "npm dist-tag rm",
        user.run(dir.path(), &["dist-tag", "rm", "@acme/hello", "stable"]),
    );
    // Publishing over a released version is refused (npm checks first, the server too).
    let again = package(dir.path(), "@acme/hello", "1.1.0", "changed");
    let refused = user.run(&again, &["publish"]);
    assert!(!refused.status.success(), "{}", text_of(&refused));

    // npm deprecate, then install says so.
    must_ok(
        "npm deprecate",
        user.run(dir.path(), &["deprecate", "@acme/hello@1.0.0", "use 1.1"]),
    );
    let doc = packument(&base, &token, "@acme/hello");
    assert_eq!(doc["versions"]["1.0.0"]["deprecated"], "use 1.1", "{doc}");
    assert!(doc["versions"]["1.1.0"].get("deprecated").is_none());
    let deprecated = app(dir.path(), "deprecated");
    let text = must_ok(
        "npm install a deprecated version",
        user.run(&deprecated, &["install", "@acme/hello@1.0.0"]),
    );
    assert!(
        text.contains("deprecated") && text.contains("use 1.1"),
        "{text}"
    );

    // npm unpublish of one version.
    must_ok(
        "npm unpublish",
        user.run(dir.path(), &["unpublish", "@acme/hello@1.1.0"]),
    );
    let doc = packument(&base, &token, "@acme/hello");
    assert!(doc["versions"].get("1.1.0").is_none(), "{doc}");
    assert_eq!(doc["dist-tags"]["latest"], "1.0.0");

    // arca ls / stat show the package.
    let listed = must_ok(
        "arca ls",
        Command::new(ARCA)
            .args(["ls", "js", "--output", "json"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &session)
            .output()
            .expect("run arca"),
    );
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["packages"][0]["name"], "@acme/hello", "{listed}");
    let stat = must_ok(
        "arca stat",
        Command::new(ARCA)
            .args(["stat", "js/@acme/hello"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &session)
            .output()
            .expect("run arca"),
    );
    assert!(stat.contains("hello-1.0.0.tgz"), "{stat}");

    // Without a token npm is refused.
    let anonymous = NpmUser::new(dir.path().join("anonymous"), &registry, None);
    let refused = anonymous.run(dir.path(), &["view", "@acme/hello"]);
    assert!(!refused.status.success());
    assert!(text_of(&refused).contains("401"), "{}", text_of(&refused));

    web_login(dir.path(), &registry, &session);
    let password = arca_chaos::credentials::admin_password(&dir.path().join("data"))
        .expect("the admin password");
    legacy_login(dir.path(), &registry, &password);
}

/// `npm login` (web) with no terminal: npm prints the login URL, the test approves it with
/// a credential the way a browser user would, npm polls the done URL and stores the token.
fn web_login(dir: &Path, registry: &str, session: &str) {
    let user = NpmUser::new(dir.join("web-login"), registry, None);
    let mut child = user
        .npm(dir)
        .args(["login", "--auth-type=web"])
        .env("BROWSER", "true")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("npm login");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let login_url = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if let Some(url) = line
                    .split_whitespace()
                    .find(|word| word.contains("/-/v1/login/"))
                {
                    break url.to_string();
                }
                seen.push(line);
            }
            Err(_) => {
                let _ = child.kill();
                panic!("npm login printed no login URL: {seen:?}");
            }
        }
    };
    let approved = block_on(async {
        reqwest::Client::new()
            .post(&login_url)
            .bearer_auth(session)
            .send()
            .await
            .expect("approve")
            .status()
    });
    assert_eq!(approved, 200);
    let output = wait_child(child, Duration::from_secs(30));
    must_ok("npm login (web)", output);
    let npmrc = std::fs::read_to_string(user.npmrc()).expect("npmrc");
    assert!(
        npmrc.contains(":_authToken=arca_"),
        "npm stored the token: {npmrc}"
    );
    assert_eq!(
        must_ok("npm whoami after login", user.run(dir, &["whoami"])).trim(),
        "admin"
    );
}

fn wait_child(mut child: std::process::Child, timeout: Duration) -> Output {
    if !poll_until(timeout, || child.try_wait().expect("wait").is_some()) {
        let _ = child.kill();
        let output = child.wait_with_output().expect("output");
        panic!("npm did not finish: {}", text_of(&output));
    }
    child.wait_with_output().expect("output")
}

/// `npm login --auth-type=legacy` needs a terminal: it runs in a detached tmux session and
/// the test types the user name and password when npm asks.
fn legacy_login(dir: &Path, registry: &str, password: &str) {
    let user = NpmUser::new(dir.join("legacy-login"), registry, None);
    let socket = dir.join("tmux.sock");
    let done = dir.join("legacy-login/status");
    let tmux = |args: &[&str]| {
        Command::new("tmux")
            .arg("-S")
            .arg(&socket)
            .args(args)
            .output()
            .expect("tmux (scripts/setup.sh installs it)")
    };
    let script = format!(
        "cd {cwd} && HOME={home} npm_config_userconfig={rc} npm_config_globalconfig={global} npm_config_cache={cache} npm login --auth-type=legacy; echo $? > {done}",
        cwd = dir.display(),
        home = user.dir.join("home").display(),
        rc = user.npmrc().display(),
        global = user.dir.join("globalrc").display(),
        cache = user.dir.join("cache").display(),
        done = done.display(),
    );
    must_ok(
        "tmux new-session",
        tmux(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            "npm",
            &script,
        ]),
    );
    let screen =
        || String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", "npm"]).stdout).to_string();
    let wait_for_prompt = |prompt: &str| {
        let asked = poll_until(Duration::from_secs(30), || {
            assert!(
                !done.exists(),
                "npm ended before asking for {prompt}: {}",
                screen()
            );
            screen().contains(prompt)
        });
        assert!(asked, "npm never asked for {prompt}: {}", screen());
    };
    wait_for_prompt("Username");
    tmux(&["send-keys", "-t", "npm", "admin", "Enter"]);
    wait_for_prompt("Password");
    tmux(&["send-keys", "-t", "npm", "-l", password]);
    tmux(&["send-keys", "-t", "npm", "Enter"]);
    let finished = poll_until(Duration::from_secs(30), || done.exists());
    assert!(finished, "npm login did not finish: {}", screen());
    let status = std::fs::read_to_string(&done).unwrap_or_default();
    let _ = tmux(&["kill-server"]);
    assert_eq!(status.trim(), "0", "npm login --auth-type=legacy failed");
    let npmrc = std::fs::read_to_string(user.npmrc()).expect("npmrc");
    assert!(
        npmrc.contains(":_authToken=arca_"),
        "npm stored the token: {npmrc}"
    );
    assert_eq!(
        must_ok("npm whoami after legacy login", user.run(dir, &["whoami"])).trim(),
        "admin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reads_its_writes_on_every_node_and_a_mirror_serves_them_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = Region::must_start(region_options(root.path(), "us", 3, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let session = us.token.clone().expect("the primary's admin token");
    let node = |region: &Region, id: u64| region.node(id).base_url();
    let (primary, third, mirror) = (node(&us, 1), node(&us, 3), node(&eu, 1));
    let dir = root.path().to_path_buf();
    let (session2, primary2) = (session.clone(), primary.clone());
    let token = tokio::task::spawn_blocking(move || {
        create_repo(&primary2, &session2, "js", "npm");
        access_token(&primary2, &session2, &["js:write"])
    })
    .await
    .expect("setup");

    // Published through node 1, installed through node 3 at once.
    let (dir2, token2) = (dir.clone(), token.clone());
    let (primary3, third2) = (primary.clone(), third.clone());
    tokio::task::spawn_blocking(move || {
        let publisher = NpmUser::new(
            dir2.join("publisher"),
            &format!("{primary3}/npm/js/"),
            Some(&token2),
        );
        let pkg = package(&dir2, "@acme/geo", "1.0.0", "primary");
        must_ok("npm publish", publisher.run(&pkg, &["publish"]));
        let other_node = NpmUser::new(
            dir2.join("node-3"),
            &format!("{third2}/npm/js/"),
            Some(&token2),
        );
        let consumer = app(&dir2, "consumer-3");
        must_ok(
            "npm install through another node",
            other_node.run(&consumer, &["install", "@acme/geo@1.0.0"]),
        );
        assert_eq!(
            installed(&consumer, "@acme/geo"),
            "module.exports = \"primary\";\n"
        );
    })
    .await
    .expect("publish and install");

    // The mirror serves it once replicated.
    let http = arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token))
        .build()
        .expect("client");
    let url = format!("{mirror}/npm/js/@acme%2fgeo");
    wait_until(
        "the mirror to serve the packument",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            matches!(http.get(&url).send().await, Ok(r) if r.status() == 200).then_some(())
        },
    )
    .await
    .expect("replicated");
    tokio::task::spawn_blocking(move || {
        let reader = NpmUser::new(
            dir.join("mirror"),
            &format!("{mirror}/npm/js/"),
            Some(&token),
        );
        let consumer = app(&dir, "consumer-mirror");
        must_ok(
            "npm install from the mirror",
            reader.run(&consumer, &["install", "@acme/geo@1.0.0"]),
        );
        assert_eq!(
            installed(&consumer, "@acme/geo"),
            "module.exports = \"primary\";\n"
        );
        // A publish to the mirror is refused with a 403 naming the primary.
        let pkg = package(&dir, "@acme/geo", "2.0.0", "at-the-mirror");
        let refused = reader.run(&pkg, &["publish"]);
        let text = text_of(&refused);
        assert!(!refused.status.success(), "{text}");
        assert!(text.contains("403") && text.contains("mirror"), "{text}");
    })
    .await
    .expect("mirror");
}
