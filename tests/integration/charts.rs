//! Remote charts fetched the way the daemon fetches them: charts made and packaged by the
//! real `helm`, served from an HTTP chart repository (`helm repo index` output behind a
//! static file server here, which counts what it is asked) and from a real OCI registry
//! (distribution's `registry`, `helm push`ed to, with basic auth). Verified by digest,
//! cached per pin, refused when tampered with, and kept when the registry is down; and a
//! team's `kind: Chart` naming a registry chart renders through the daemon's own wiring.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use axum::response::Response;
use pontoon::config::{ChartHost, ChartsConfig, SecretRef};
use pontoon::desired::PackageSource;
use pontoon::source::charts::ChartFetcher;
use sha2::Digest as _;

use crate::support::registry::Registry;

fn helm_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg(crate::support::control_plane::repo_root().join("tests/support/go-build.sh"))
        .arg("bin-dir")
        .output()
        .expect("go-build.sh bin-dir");
    let helm = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
    assert!(
        helm.exists(),
        "{} is missing: tests/support/go-build.sh packages builds it",
        helm.display()
    );
    helm
}

/// Runs the real helm with its homes in `home` (no user config, no repositories).
pub(crate) fn helm(home: &Path, args: &[&str]) -> String {
    let out = Command::new(helm_bin())
        .args(args)
        .env("HOME", home)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .env("HELM_REGISTRY_CONFIG", home.join("registry.json"))
        .output()
        .expect("run helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `helm create` then `helm package` at `version` into `out`; the archive's path.
fn package(home: &Path, out: &Path, name: &str, version: &str) -> PathBuf {
    let src = home
        .join("src")
        .join(format!("{}-{version}", out.display()).replace('/', "_"));
    std::fs::create_dir_all(&src).expect("mkdir");
    let chart = src.join(name);
    helm(home, &["create", chart.to_str().expect("path")]);
    std::fs::create_dir_all(out).expect("mkdir");
    helm(
        home,
        &[
            "package",
            chart.to_str().expect("path"),
            "--version",
            version,
            "--destination",
            out.to_str().expect("path"),
        ],
    );
    out.join(format!("{name}-{version}.tgz"))
}

pub(crate) fn sha256_hex(path: &Path) -> String {
    hex::encode(sha2::Sha256::digest(std::fs::read(path).expect("read")))
}

/// A static file server over a folder, with ETags, that writes down each request.
pub(crate) struct FileServer {
    pub(crate) url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl FileServer {
    pub(crate) async fn start(root: PathBuf) -> FileServer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (root, log) = (root.clone(), log.clone());
            async move { serve_file(&root, req.uri().path(), req.headers(), &log) }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move { axum::serve(listener, app).await });
        FileServer { url, seen }
    }

    /// The requests seen so far, as `GET /path STATUS`, forgotten afterwards.
    pub(crate) fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().expect("lock"))
    }
}

fn serve_file(root: &Path, path: &str, headers: &HeaderMap, log: &Mutex<Vec<String>>) -> Response {
    let file = root.join(path.trim_start_matches('/'));
    if let Ok(to) = std::fs::read_to_string(file.with_extension("redirect")) {
        log.lock().expect("lock").push(format!("GET {path} 302"));
        return Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to.trim())
            .body(Body::empty())
            .expect("response");
    }
    let (status, body, etag) = match std::fs::read(&file) {
        Ok(bytes) => {
            let etag = format!("\"{}\"", hex::encode(sha2::Sha256::digest(&bytes)));
            let unchanged = headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == etag.as_bytes());
            if unchanged {
                (StatusCode::NOT_MODIFIED, Vec::new(), Some(etag))
            } else {
                (StatusCode::OK, bytes, Some(etag))
            }
        }
        Err(_) => (StatusCode::NOT_FOUND, Vec::new(), None),
    };
    // Whose credentials came along, when any did.
    let user = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .map(|b| {
            use base64::Engine as _;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(b)
                .unwrap_or_default();
            let text = String::from_utf8_lossy(&decoded).into_owned();
            format!(" as {}", text.split(':').next().unwrap_or_default())
        })
        .unwrap_or_default();
    log.lock()
        .expect("lock")
        .push(format!("GET {path} {}{user}", status.as_u16()));
    let mut response = Response::builder().status(status);
    if let Some(etag) = etag {
        response = response.header(header::ETAG, etag);
    }
    response.body(Body::from(body)).expect("response")
}

pub(crate) fn config(cache: &Path, hosts: Vec<ChartHost>) -> ChartsConfig {
    ChartsConfig {
        cache_dir: cache.to_owned(),
        timeout: Duration::from_secs(30),
        hosts,
        keep_unused: pontoon::config::DEFAULT_KEEP_UNUSED,
    }
}

fn from_repository(url: &str, version: &str) -> PackageSource {
    PackageSource::ChartRepository {
        url: format!("{url}/charts"),
        chart: "app".into(),
        version: version.into(),
    }
}

pub(crate) fn cached_archives(cache: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(cache.join("charts"))
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tgz"))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_repository_chart_is_verified_and_fetched_once_per_pin() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served, cache) = (
        tmp.path().join("helm"),
        tmp.path().join("www"),
        tmp.path().join("cache"),
    );
    let repo = served.join("charts");
    let first = package(&home, &repo, "app", "0.1.0");
    package(&home, &repo, "app", "0.2.0");
    helm(&home, &["repo", "index", repo.to_str().expect("path")]);
    let server = FileServer::start(served).await;

    let fetcher = ChartFetcher::new(&config(&cache, vec![])).expect("fetcher");
    let fetched = fetcher
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect("fetched");
    assert_eq!(fetched.digest, format!("sha256:{}", sha256_hex(&first)));
    assert_eq!(
        std::fs::read(&fetched.archive).expect("archive"),
        std::fs::read(&first).expect("packaged"),
        "the archive is the one helm packaged"
    );
    assert_eq!(
        server.take(),
        [
            "GET /charts/index.yaml 200",
            "GET /charts/app-0.1.0.tgz 200"
        ]
    );

    // The same pin again, and from a new fetcher on the same cache (a restart): nothing asked.
    fetcher
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect("cached");
    let restarted = ChartFetcher::new(&config(&cache, vec![])).expect("fetcher");
    let again = restarted
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect("cached after a restart");
    assert_eq!(again, fetched);
    assert_eq!(
        server.take(),
        Vec::<String>::new(),
        "an unchanged pin asks nothing"
    );

    // A new pin: the index is asked again but, unchanged, not sent again.
    let second = restarted
        .fetch(&from_repository(&server.url, "0.2.0"))
        .await
        .expect("new version");
    assert_ne!(second.digest, fetched.digest);
    assert_eq!(
        server.take(),
        [
            "GET /charts/index.yaml 304",
            "GET /charts/app-0.2.0.tgz 200"
        ]
    );
}

#[tokio::test]
async fn a_tampered_repository_archive_is_refused_and_not_cached() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served, cache) = (
        tmp.path().join("helm"),
        tmp.path().join("www"),
        tmp.path().join("cache"),
    );
    let repo = served.join("charts");
    let archive = package(&home, &repo, "app", "0.1.0");
    helm(&home, &["repo", "index", repo.to_str().expect("path")]);
    // Swapped after the index was made: another chart's bytes under the same name.
    let other_src = tmp.path().join("other").join("app");
    std::fs::create_dir_all(tmp.path().join("other")).expect("mkdir");
    helm(&home, &["create", other_src.to_str().expect("path")]);
    let values = other_src.join("values.yaml");
    let text = std::fs::read_to_string(&values).expect("values");
    std::fs::write(&values, format!("{text}\nimage: {{tag: tampered}}\n")).expect("write");
    let other_out = tmp.path().join("other-packaged");
    helm(
        &home,
        &[
            "package",
            other_src.to_str().expect("path"),
            "--version",
            "0.1.0",
            "--destination",
            other_out.to_str().expect("path"),
        ],
    );
    let other = other_out.join("app-0.1.0.tgz");
    assert_ne!(sha256_hex(&other), sha256_hex(&archive), "another chart");
    std::fs::copy(&other, &archive).expect("swap");
    let server = FileServer::start(served).await;

    let fetcher = ChartFetcher::new(&config(&cache, vec![])).expect("fetcher");
    let err = fetcher
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect_err("tampered");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "chart app 0.1.0 from {}/charts: digest mismatch: archive",
            server.url
        )),
        "{text}"
    );
    assert!(text.contains(&sha256_hex(&other)), "{text}");
    assert_eq!(cached_archives(&cache), Vec::<String>::new());
}

#[tokio::test]
async fn plain_http_to_a_host_not_allowed_it_is_refused_before_any_request() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fetcher = ChartFetcher::new(&config(tmp.path(), vec![])).expect("fetcher");
    let err = fetcher
        .fetch(&PackageSource::ChartRepository {
            url: "http://charts.internal/stable".into(),
            chart: "app".into(),
            version: "1.0.0".into(),
        })
        .await
        .expect_err("refused");
    assert_eq!(
        err.to_string(),
        "chart app 1.0.0 from http://charts.internal/stable: plain HTTP to charts.internal is refused: only a loopback address, or a host marked `insecure: true` under charts.hosts, is reached without TLS"
    );
}

#[tokio::test]
async fn repository_credentials_go_to_the_repository_host_only() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served) = (tmp.path().join("helm"), tmp.path().join("www"));
    let repo = served.join("charts");
    package(&home, &repo, "app", "0.1.0");
    helm(&home, &["repo", "index", repo.to_str().expect("path")]);
    let server = FileServer::start(served).await;
    // The index is read at 127.0.0.1; its entry points at the same server by another
    // name, which is another host to a client.
    let other_host = server.url.replace("127.0.0.1", "localhost");
    let index = repo.join("index.yaml");
    let text = std::fs::read_to_string(&index).expect("index");
    let moved = format!("- {other_host}/charts/app-0.1.0.tgz");
    std::fs::write(&index, text.replace("- app-0.1.0.tgz", &moved)).expect("write");
    let password = tmp.path().join("password");
    std::fs::write(&password, "s3cret\n").expect("write");
    let host = server.url.trim_start_matches("http://").to_owned();
    let hosts = vec![ChartHost {
        host,
        username: Some("robot".into()),
        password: Some(SecretRef::File(password)),
        insecure: false,
    }];
    let fetcher = ChartFetcher::new(&config(&tmp.path().join("cache"), hosts)).expect("fetcher");
    fetcher
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect("fetched");
    assert_eq!(
        server.take(),
        [
            "GET /charts/index.yaml 200 as robot",
            "GET /charts/app-0.1.0.tgz 200"
        ]
    );
}

#[tokio::test]
async fn a_redirect_to_plain_http_is_refused_like_a_url() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served) = (tmp.path().join("helm"), tmp.path().join("www"));
    let repo = served.join("charts");
    package(&home, &repo, "app", "0.1.0");
    helm(&home, &["repo", "index", repo.to_str().expect("path")]);
    // The entry's archive moved to a host reached without TLS.
    let index = repo.join("index.yaml");
    let text = std::fs::read_to_string(&index).expect("index");
    std::fs::write(&index, text.replace("- app-0.1.0.tgz", "- moved.tgz")).expect("write");
    std::fs::write(
        repo.join("moved.redirect"),
        "http://charts.internal/app-0.1.0.tgz",
    )
    .expect("write");
    let server = FileServer::start(served).await;
    let fetcher = ChartFetcher::new(&config(&tmp.path().join("cache"), vec![])).expect("fetcher");
    let err = fetcher
        .fetch(&from_repository(&server.url, "0.1.0"))
        .await
        .expect_err("refused");
    assert!(
        err.to_string().ends_with(
            "redirected to http://charts.internal/app-0.1.0.tgz, which is refused: only a loopback address, or a host marked `insecure: true` under charts.hosts, is reached without TLS"
        ),
        "{err}"
    );
}

fn oci(registry: &Registry, version: &str, digest: Option<&str>) -> PackageSource {
    PackageSource::ChartOci {
        reference: format!("oci://{}/charts/app", registry.host),
        version: version.into(),
        digest: digest.map(str::to_owned),
    }
}

/// `helm push` of a packaged chart; the manifest digest helm printed.
fn push(home: &Path, registry: &Registry, archive: &Path) -> String {
    let out = helm(
        home,
        &[
            "push",
            archive.to_str().expect("path"),
            &format!("oci://{}/charts", registry.host),
            "--plain-http",
            "--username",
            &registry.user,
            "--password",
            &registry.password,
        ],
    );
    out.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("helm push printed no digest: {out}"))
        .trim()
        .to_owned()
}

#[tokio::test]
async fn a_registry_chart_is_verified_cached_and_kept_while_the_registry_is_down() {
    let registry = Registry::start("charts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, cache) = (tmp.path().join("helm"), tmp.path().join("cache"));
    let packaged = tmp.path().join("packaged");
    let first = package(&home, &packaged, "app", "0.1.0");
    let second = package(&home, &packaged, "app", "0.2.0");
    let manifest = push(&home, &registry, &first);
    push(&home, &registry, &second);
    let password = tmp.path().join("registry-password");
    std::fs::write(&password, &registry.password).expect("write");
    let hosts = vec![ChartHost {
        host: registry.host.clone(),
        username: Some(registry.user.clone()),
        password: Some(SecretRef::File(password)),
        insecure: false,
    }];

    // Without credentials the registry's challenge is answered with what is missing.
    let anonymous = ChartFetcher::new(&config(&tmp.path().join("c0"), vec![])).expect("fetcher");
    let err = anonymous
        .fetch(&oci(&registry, "0.1.0", None))
        .await
        .expect_err("no credentials");
    assert!(
        err.to_string().ends_with(&format!(
            "authentication: {} needs credentials: give them under charts.hosts",
            registry.host
        )),
        "{err}"
    );

    // A pinned digest the manifest does not have is refused; the right one is taken.
    let fetcher = ChartFetcher::new(&config(&cache, hosts.clone())).expect("fetcher");
    let wrong = format!("sha256:{}", "0".repeat(64));
    let err = fetcher
        .fetch(&oci(&registry, "0.1.0", Some(&wrong)))
        .await
        .expect_err("wrong pin");
    assert!(
        err.to_string().contains("digest mismatch: manifest"),
        "{err}"
    );
    assert_eq!(cached_archives(&cache), Vec::<String>::new());
    let blobs = |r: &Registry| r.requests(&["GET /v2/charts/app/blobs/", "pontoon/"]);
    let fetched = fetcher
        .fetch(&oci(&registry, "0.1.0", Some(&manifest)))
        .await
        .expect("fetched");
    assert_eq!(fetched.digest, format!("sha256:{}", sha256_hex(&first)));
    assert_eq!(
        std::fs::read(&fetched.archive).expect("archive"),
        std::fs::read(&first).expect("packaged")
    );
    assert_eq!(blobs(&registry), 1, "one chart layer downloaded");

    // The same pin again: no request for it at all.
    let manifests = |r: &Registry| r.requests(&["/v2/charts/app/manifests/", "pontoon/"]);
    let asked = manifests(&registry);
    let again = fetcher
        .fetch(&oci(&registry, "0.1.0", Some(&manifest)))
        .await
        .expect("cached");
    assert_eq!(again, fetched);
    assert_eq!((blobs(&registry), manifests(&registry)), (1, asked));

    // The registry goes down: the cached pin is still served; a new pin fails alone and
    // leaves the cache as it was.
    registry.stop();
    let restarted = ChartFetcher::new(&config(&cache, hosts.clone())).expect("fetcher");
    restarted
        .fetch(&oci(&registry, "0.1.0", Some(&manifest)))
        .await
        .expect("served from the cache while the registry is down");
    let err = restarted
        .fetch(&oci(&registry, "0.2.0", None))
        .await
        .expect_err("registry down");
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert_eq!(
        cached_archives(&cache),
        [format!("sha256-{}.tgz", sha256_hex(&first))]
    );

    // Back up: the changed pin is fetched.
    registry.start_again();
    let newer = restarted
        .fetch(&oci(&registry, "0.2.0", None))
        .await
        .expect("fetched once the registry is back");
    assert_eq!(newer.digest, format!("sha256:{}", sha256_hex(&second)));
    assert_eq!(blobs(&registry), 2);
}

/// A token service in front of the real registry, as hosted registries put one: `/v2/`
/// answers `401` with a `Bearer` challenge naming `/token`, which gives a token for the
/// configured user; requests with that token are passed to the registry.
struct TokenGate {
    host: String,
    tokens_given: Arc<Mutex<usize>>,
}

const GATE_TOKEN: &str = "t0ken-for-pontoon";

impl TokenGate {
    async fn start(registry: &Registry) -> TokenGate {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let tokens_given = Arc::new(Mutex::new(0));
        let state = (
            registry.host.clone(),
            registry.user.clone(),
            registry.password.clone(),
            host.clone(),
            tokens_given.clone(),
            reqwest::Client::new(),
        );
        let app = axum::Router::new().fallback(move |req: Request<Body>| {
            let (upstream, user, password, host, given, client) = state.clone();
            async move {
                let auth = req
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let path = req.uri().path().to_owned();
                if path == "/token" {
                    use base64::Engine as _;
                    let basic = base64::engine::general_purpose::STANDARD
                        .encode(format!("{user}:{password}"));
                    let query = req.uri().query().unwrap_or_default();
                    if auth != format!("Basic {basic}")
                        || !query.contains("scope=repository%3Acharts%2Fapp%3Apull")
                    {
                        return Response::builder()
                            .status(StatusCode::UNAUTHORIZED)
                            .body(Body::empty())
                            .expect("response");
                    }
                    *given.lock().expect("lock") += 1;
                    return Response::builder()
                        .body(Body::from(format!("{{\"token\":\"{GATE_TOKEN}\"}}")))
                        .expect("response");
                }
                if auth != format!("Bearer {GATE_TOKEN}") {
                    let challenge = format!(
                        "Bearer realm=\"http://{host}/token\",service=\"gate\",scope=\"repository:charts/app:pull\""
                    );
                    return Response::builder()
                        .status(StatusCode::UNAUTHORIZED)
                        .header(header::WWW_AUTHENTICATE, challenge)
                        .body(Body::empty())
                        .expect("response");
                }
                let mut upstream_req = client
                    .get(format!("http://{upstream}{}", req.uri()))
                    .basic_auth(&user, Some(&password));
                if let Some(accept) = req.headers().get(header::ACCEPT) {
                    upstream_req = upstream_req.header(header::ACCEPT, accept.as_bytes());
                }
                let answer = upstream_req.send().await.expect("registry answers");
                let mut response = Response::builder().status(answer.status().as_u16());
                for name in ["content-type", "docker-content-digest"] {
                    if let Some(v) = answer.headers().get(name) {
                        response = response.header(name, v.as_bytes());
                    }
                }
                let body = answer.bytes().await.expect("body");
                response.body(Body::from(body)).expect("response")
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        TokenGate { host, tokens_given }
    }
}

#[tokio::test]
async fn a_registry_behind_a_token_service_is_fetched_with_a_token_for_the_credentials() {
    let registry = Registry::start("token");
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("helm");
    let archive = package(&home, &tmp.path().join("packaged"), "app", "0.3.0");
    push(&home, &registry, &archive);
    let gate = TokenGate::start(&registry).await;
    let password = tmp.path().join("registry-password");
    std::fs::write(&password, format!("{}\n", registry.password)).expect("write");
    let hosts = vec![ChartHost {
        host: gate.host.clone(),
        username: Some(registry.user.clone()),
        password: Some(SecretRef::File(password)),
        insecure: false,
    }];
    let fetcher = ChartFetcher::new(&config(&tmp.path().join("cache"), hosts)).expect("fetcher");
    let fetched = fetcher
        .fetch(&PackageSource::ChartOci {
            reference: format!("oci://{}/charts/app", gate.host),
            version: "0.3.0".into(),
            digest: None,
        })
        .await
        .expect("fetched through the token service");
    assert_eq!(fetched.digest, format!("sha256:{}", sha256_hex(&archive)));
    assert_eq!(
        *gate.tokens_given.lock().expect("lock"),
        1,
        "one token serves the manifest and the layer"
    );
}

#[tokio::test]
async fn charts_fetched_together_are_fetched_once_each_and_fail_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (home, served) = (tmp.path().join("helm"), tmp.path().join("www"));
    let repo = served.join("charts");
    let archive = package(&home, &repo, "app", "0.1.0");
    helm(&home, &["repo", "index", repo.to_str().expect("path")]);
    let server = FileServer::start(served).await;
    let fetcher = ChartFetcher::new(&config(&tmp.path().join("cache"), vec![])).expect("fetcher");
    let (good, missing) = (
        from_repository(&server.url, "0.1.0"),
        from_repository(&server.url, "9.9.9"),
    );
    let folder = PackageSource::ChartFolder {
        path: "teams/a/chart".into(),
    };
    // Two teams on two clusters ask for the same pin; one asks for a version not there.
    let got = fetcher
        .fetch_all([&good, &good, &missing, &folder, &good])
        .await;
    assert_eq!(
        got.len(),
        2,
        "each remote pin once, the folder left out: {got:?}"
    );
    let fetched = got[&good].as_ref().expect("fetched");
    assert_eq!(fetched.digest, format!("sha256:{}", sha256_hex(&archive)));
    let err = got[&missing].as_ref().expect_err("no such version");
    assert_eq!(
        pontoon::desired::PackageError::from(err).message,
        format!(
            "chart app 9.9.9 from {}/charts: the repository's index has no version 9.9.9 of app (it has 0.1.0)",
            server.url
        )
    );
    let archives = server
        .take()
        .into_iter()
        .filter(|r| r.ends_with(".tgz 200"))
        .count();
    assert_eq!(archives, 1, "the shared pin's archive was downloaded once");
}

/// A team's `kind: Chart` naming a chart in the registry is fetched, verified and rendered
/// by the same wiring the daemon renders with; a pin the registry does not hold fails that
/// chart's team only, naming the chart.
#[tokio::test]
async fn a_teams_registry_chart_is_fetched_and_rendered_by_the_daemons_wiring() {
    use std::collections::BTreeMap;

    let registry = Registry::start("charts");
    let tmp = tempfile::tempdir().expect("tempdir");
    let home = tmp.path().join("helm");
    let archive = package(&home, &tmp.path().join("packaged"), "app", "0.1.0");
    let manifest = push(&home, &registry, &archive);
    let password = tmp.path().join("registry-password");
    std::fs::write(&password, &registry.password).expect("write");
    let charts = config(
        &tmp.path().join("cache"),
        vec![ChartHost {
            host: registry.host.clone(),
            username: Some(registry.user.clone()),
            password: Some(SecretRef::File(password)),
            insecure: false,
        }],
    );
    let team = |name: &str, version: &str| {
        [
            (
                format!("teams/{name}/team.yaml"),
                format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: Team\nmetadata: {{name: {name}}}\nspec:\n  namespaces: [{name}]\n  clusters: {{names: [c1]}}\n"
                ),
            ),
            (
                format!("teams/{name}/app.yaml"),
                format!(
                    "apiVersion: pontoon.dev/v1alpha1\nkind: Chart\nmetadata: {{name: app}}\nspec:\n  oci: oci://{}/charts/app\n  version: {version}\n  digest: {manifest}\n  values: {{replicaCount: 3}}\n",
                    registry.host
                ),
            ),
        ]
    };
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert(
        "platform.yaml".into(),
        b"apiVersion: pontoon.dev/v1alpha1\nkind: Platform\nmetadata: {name: p}\nspec:\n  clusters: [{name: c1}]\n  teamPackages: {charts: true}\n  policy:\n    allowedKinds:\n      - {group: apps, kind: Deployment}\n      - {kind: Service}\n      - {kind: ServiceAccount}\n".to_vec(),
    );
    for (path, text) in team("good", "0.1.0")
        .into_iter()
        .chain(team("missing", "9.9.9"))
    {
        files.insert(path, text.into_bytes());
    }
    let (state, packages) = crate::packages::render_files(&BTreeMap::new(), &charts, files).await;
    let text: Vec<String> = state.diagnostics.iter().map(|d| d.to_string()).collect();

    // good's chart came from the registry: helm create's Deployment with the team's values.
    let unit = state
        .units
        .iter()
        .find(|(id, _)| id.team.0 == "good")
        .map(|(_, u)| u)
        .unwrap_or_else(|| panic!("no unit for good: {text:#?}"));
    let deployment = unit
        .objects
        .iter()
        .find(|o| o.object.kind() == "Deployment")
        .unwrap_or_else(|| panic!("no Deployment: {text:#?}"));
    assert_eq!(
        deployment.object.to_value()["spec"]["replicas"],
        3,
        "{text:#?}"
    );
    // missing's pin is not in the registry: its chart fails naming it, and only its team.
    assert!(
        text.iter()
            .any(|d| d.contains("team missing") && d.contains("9.9.9")),
        "{text:#?}"
    );
    assert!(
        !state.units.keys().any(|id| id.team.0 == "missing"),
        "{text:#?}"
    );
    assert_eq!(packages.runs(), 1, "one helm run, for good's chart");
}
