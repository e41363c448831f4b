//! The real Maven client (mvn 3.8.7 on Java 17, as the machine has it) against the real
//! binary: `mvn deploy` of a small project as a release and then as a SNAPSHOT twice, with
//! the credentials in settings.xml `<servers>` (Maven sends them on deploys, and on reads only
//! after a `401` challenge), a redeploy of the release with other bytes refused, and consumer
//! projects that resolve the release and the newest SNAPSHOT build from Arca into a fresh local
//! repository. In a region of three nodes a build through another node resolves the deploy at
//! once, and a mirror region serves it and refuses a deploy with a 403 Maven prints.
//!
//! Maven Central is not reachable here: plugins come from Debian's repository
//! (`/usr/share/maven-repo`, filled by the `libmaven-*-plugin-java` packages
//! `scripts/setup.sh` installs), pinned to the versions Debian ships.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use arca_chaos::{wait_until, ArcaProcess, ProcessOptions, Region};
use serde_json::Value;

mod clients;

use clients::{access_token, block_on, create_repo, must_ok, region_options, text_of, ARCA};

/// The build plugins, at the versions Debian's packages ship.
const PLUGINS: &[(&str, &str)] = &[
    ("maven-resources-plugin", "3.3.0"),
    ("maven-compiler-plugin", "3.10.1"),
    ("maven-surefire-plugin", "2.22.3"),
    ("maven-jar-plugin", "3.3.0"),
    ("maven-install-plugin", "3.1.0"),
    ("maven-deploy-plugin", "3.0.0"),
];

fn plugins_xml() -> String {
    PLUGINS
        .iter()
        .map(|(artifact, version)| {
            format!("<plugin><groupId>org.apache.maven.plugins</groupId><artifactId>{artifact}</artifactId><version>{version}</version></plugin>")
        })
        .collect()
}

const PROPERTIES: &str = "<properties><maven.compiler.source>17</maven.compiler.source><maven.compiler.target>17</maven.compiler.target><project.build.sourceEncoding>UTF-8</project.build.sourceEncoding></properties>";

/// One Maven user: settings.xml with the server's credentials and Debian's repository as
/// `central`.
struct MavenUser {
    dir: PathBuf,
}

impl MavenUser {
    fn new(dir: PathBuf, token: &str) -> Self {
        std::fs::create_dir_all(&dir).expect("maven dir");
        let settings = format!(
            r#"<settings>
 <servers><server><id>arca</id><username>deployer</username><password>{token}</password></server></servers>
 <profiles><profile><id>debian</id>
  <repositories><repository><id>central</id><url>file:///usr/share/maven-repo</url></repository></repositories>
  <pluginRepositories><pluginRepository><id>central</id><url>file:///usr/share/maven-repo</url></pluginRepository></pluginRepositories>
 </profile></profiles>
 <activeProfiles><activeProfile>debian</activeProfile></activeProfiles>
</settings>"#
        );
        std::fs::write(dir.join("settings.xml"), settings).expect("settings.xml");
        Self { dir }
    }

    /// `mvn -B` in `project` with a local repository of its own (`local`: a fresh one means
    /// everything from Arca is fetched again).
    fn mvn(&self, project: &Path, local: &str, args: &[&str]) -> Output {
        Command::new("mvn")
            .current_dir(project)
            .arg("-B")
            .arg("-s")
            .arg(self.dir.join("settings.xml"))
            .arg(format!(
                "-Dmaven.repo.local={}",
                self.dir.join(local).display()
            ))
            .args(args)
            .env("MAVEN_OPTS", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
            .output()
            .expect("run mvn (scripts/setup.sh installs maven)")
    }
}

/// The library `com.acme:hello` at `version`, deploying to `repository` (a URL), whose
/// `Hello.greet()` returns `greeting`.
fn library(dir: &Path, repository: &str, version: &str, greeting: &str) -> PathBuf {
    let path = dir.join(format!("hello-{version}-{greeting}"));
    let source = path.join("src/main/java/com/acme");
    std::fs::create_dir_all(&source).expect("source dir");
    std::fs::write(
        source.join("Hello.java"),
        format!("package com.acme;\npublic class Hello {{ public static String greet() {{ return \"{greeting}\"; }} }}\n"),
    )
    .expect("Hello.java");
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.acme</groupId><artifactId>hello</artifactId><version>{version}</version>
  {PROPERTIES}
  <distributionManagement>
    <repository><id>arca</id><url>{repository}</url></repository>
    <snapshotRepository><id>arca</id><url>{repository}</url></snapshotRepository>
  </distributionManagement>
  <build><plugins>{plugins}</plugins></build>
</project>"#,
        plugins = plugins_xml()
    );
    std::fs::write(path.join("pom.xml"), pom).expect("pom.xml");
    path
}

/// A consumer of `com.acme:hello:${hello.version}` from `repository`: it compiles only
/// with the library's jar.
fn consumer(dir: &Path, label: &str, repository: &str) -> PathBuf {
    let path = dir.join(label);
    let source = path.join("src/main/java/com/example");
    std::fs::create_dir_all(&source).expect("source dir");
    std::fs::write(
        source.join("App.java"),
        "package com.example;\npublic class App { public static void main(String[] a) { System.out.println(com.acme.Hello.greet()); } }\n",
    )
    .expect("App.java");
    let pom = format!(
        r#"<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>com.example</groupId><artifactId>app</artifactId><version>1.0</version>
  {PROPERTIES}
  <repositories><repository><id>arca</id><url>{repository}</url>
    <releases><enabled>true</enabled></releases>
    <snapshots><enabled>true</enabled><updatePolicy>always</updatePolicy></snapshots>
  </repository></repositories>
  <dependencies><dependency><groupId>com.acme</groupId><artifactId>hello</artifactId><version>${{hello.version}}</version></dependency></dependencies>
  <build><plugins>{plugins}</plugins></build>
</project>"#,
        plugins = plugins_xml()
    );
    std::fs::write(path.join("pom.xml"), pom).expect("pom.xml");
    path
}

fn get_text(url: &str, token: &str) -> (u16, String) {
    block_on(async {
        let response = reqwest::Client::new()
            .get(url)
            .basic_auth("deployer", Some(token))
            .send()
            .await
            .expect("get");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    })
}

/// The jar files a local repository holds for `com.acme:hello:{version}`.
fn resolved_jars(local: &Path, version: &str) -> Vec<String> {
    let dir = local.join("com/acme/hello").join(version);
    let mut jars: Vec<String> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.ends_with(".jar"))
                .collect()
        })
        .unwrap_or_default();
    jars.sort();
    jars
}

#[test]
fn mvn_deploys_releases_and_snapshots_and_a_consumer_resolves_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = ArcaProcess::must_start(ProcessOptions::new(ARCA, dir.path().join("data")));
    let base = server.base_url();
    let session = server.admin_token_blocking();
    create_repo(&base, &session, "m2", "maven");
    let token = access_token(&base, &session, &["m2:write"]);
    let repository = format!("{base}/maven/m2");
    let user = MavenUser::new(dir.path().join("user"), &token);

    let release = library(dir.path(), &repository, "1.0.0", "one");
    must_ok(
        "mvn deploy 1.0.0",
        user.mvn(&release, "m2-deploy", &["-q", "deploy"]),
    );
    let (status, metadata) = get_text(
        &format!("{repository}/com/acme/hello/maven-metadata.xml"),
        &token,
    );
    assert_eq!(status, 200, "{metadata}");
    assert!(metadata.contains("<release>1.0.0</release>"), "{metadata}");

    // The same version with other bytes is refused, and Maven says why.
    let changed = library(dir.path(), &repository, "1.0.0", "changed");
    let refused = user.mvn(&changed, "m2-deploy", &["deploy"]);
    let text = text_of(&refused);
    assert!(!refused.status.success(), "{text}");
    assert!(text.contains("409"), "{text}");

    // A SNAPSHOT, deployed twice: the second build is number 2.
    for greeting in ["snap-one", "snap-two"] {
        let snapshot = library(dir.path(), &repository, "1.1.0-SNAPSHOT", greeting);
        must_ok(
            "mvn deploy 1.1.0-SNAPSHOT",
            user.mvn(&snapshot, "m2-deploy", &["-q", "deploy"]),
        );
    }
    let (status, version_doc) = get_text(
        &format!("{repository}/com/acme/hello/1.1.0-SNAPSHOT/maven-metadata.xml"),
        &token,
    );
    assert_eq!(status, 200, "{version_doc}");
    assert!(
        version_doc.contains("<buildNumber>2</buildNumber>"),
        "{version_doc}"
    );

    // Consumers with fresh local repositories: the release, then the newest SNAPSHOT build.
    let app = consumer(dir.path(), "app", &repository);
    must_ok(
        "mvn compile against 1.0.0",
        user.mvn(
            &app,
            "m2-release",
            &["-q", "-Dhello.version=1.0.0", "compile"],
        ),
    );
    assert_eq!(
        resolved_jars(&user.dir.join("m2-release"), "1.0.0"),
        ["hello-1.0.0.jar"]
    );
    let snapshot_app = consumer(dir.path(), "app-snapshot", &repository);
    must_ok(
        "mvn compile against 1.1.0-SNAPSHOT",
        user.mvn(
            &snapshot_app,
            "m2-snapshot",
            &["-q", "-Dhello.version=1.1.0-SNAPSHOT", "compile"],
        ),
    );
    let jars = resolved_jars(&user.dir.join("m2-snapshot"), "1.1.0-SNAPSHOT");
    assert!(
        jars.iter().any(|j| j.ends_with("-2.jar")),
        "the newest build was resolved: {jars:?}"
    );

    // arca ls shows the artifact.
    let listed = must_ok(
        "arca ls",
        Command::new(ARCA)
            .args(["ls", "m2", "--output", "json"])
            .env("ARCA_SERVER", &base)
            .env("ARCA_TOKEN", &session)
            .output()
            .expect("run arca"),
    );
    let listed: Value = serde_json::from_str(&listed).expect("json");
    assert_eq!(listed["packages"][0]["name"], "com.acme:hello", "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_reads_its_deploys_on_every_node_and_a_mirror_serves_them_read_only() {
    let root = tempfile::tempdir().expect("tempdir");
    let us = Region::must_start(region_options(root.path(), "us", 3, Vec::new())).await;
    let eu = Region::must_start(region_options(root.path(), "eu", 1, us.replication_addrs())).await;
    let session = us.token.clone().expect("the primary's admin token");
    let node = |region: &Region, id: u64| region.node(id).base_url();
    let (primary, third, mirror) = (node(&us, 1), node(&us, 3), node(&eu, 1));
    let dir = root.path().to_path_buf();
    let (session2, primary2) = (session.clone(), primary.clone());
    let token = tokio::task::spawn_blocking(move || {
        create_repo(&primary2, &session2, "m2", "maven");
        access_token(&primary2, &session2, &["m2:write"])
    })
    .await
    .expect("setup");

    // Deployed through node 1, resolved through node 3 at once.
    let (dir2, token2, third2) = (dir.clone(), token.clone(), third.clone());
    tokio::task::spawn_blocking(move || {
        let user = MavenUser::new(dir2.join("user"), &token2);
        let project = library(&dir2, &format!("{primary}/maven/m2"), "2.0.0", "geo");
        must_ok(
            "mvn deploy",
            user.mvn(&project, "m2-deploy", &["-q", "deploy"]),
        );
        let app = consumer(&dir2, "app-3", &format!("{third2}/maven/m2"));
        must_ok(
            "mvn compile through another node",
            user.mvn(
                &app,
                "m2-node-3",
                &["-q", "-Dhello.version=2.0.0", "compile"],
            ),
        );
        assert_eq!(
            resolved_jars(&user.dir.join("m2-node-3"), "2.0.0"),
            ["hello-2.0.0.jar"]
        );
    })
    .await
    .expect("deploy and resolve");

    // The mirror serves it once replicated, checksums included.
    let http = arca_chaos::credentials::authorized(reqwest::Client::builder(), Some(&token))
        .build()
        .expect("client");
    let jar = format!("{mirror}/maven/m2/com/acme/hello/2.0.0/hello-2.0.0.jar");
    wait_until(
        "the mirror to serve the jar",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async {
            matches!(http.get(&jar).send().await, Ok(r) if r.status() == 200).then_some(())
        },
    )
    .await
    .expect("replicated");
    let bytes = http
        .get(&jar)
        .send()
        .await
        .expect("jar")
        .bytes()
        .await
        .expect("bytes");
    let sha256 = http
        .get(format!("{jar}.sha256"))
        .send()
        .await
        .expect("sha256")
        .text()
        .await
        .expect("text");
    use sha2::Digest as _;
    assert_eq!(sha256, hex::encode(sha2::Sha256::digest(&bytes)));
    let metadata = http
        .get(format!(
            "{mirror}/maven/m2/com/acme/hello/maven-metadata.xml"
        ))
        .send()
        .await
        .expect("metadata")
        .text()
        .await
        .expect("text");
    assert!(metadata.contains("<version>2.0.0</version>"), "{metadata}");

    // A deploy to the mirror is refused with a 403 that says why.
    tokio::task::spawn_blocking(move || {
        let user = MavenUser::new(dir.join("mirror-user"), &token);
        let project = library(
            &dir,
            &format!("{mirror}/maven/m2"),
            "3.0.0",
            "at-the-mirror",
        );
        let refused = user.mvn(&project, "m2-mirror", &["deploy"]);
        let text = text_of(&refused);
        assert!(!refused.status.success(), "{text}");
        assert!(text.contains("403") && text.contains("mirror"), "{text}");
    })
    .await
    .expect("mirror");
}
