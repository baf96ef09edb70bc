//! Polling a Git remote with libgit2. Each poll is one blocking job (run it with
//! `spawn_blocking`): list the remote's refs — one round trip — and fetch only when the
//! tracked ref moved; then read the commit's tree straight from the object database into
//! an owned [`Snapshot`] (no checkout). The cache is a bare repository per source; a
//! cache libgit2 cannot open is deleted and cloned again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use git2::{
    AutotagOption, CertificateCheckStatus, Cred, FetchOptions, ObjectType, Oid, RemoteCallbacks,
    Repository,
};

use super::{Snapshot, SourceError};
use crate::config::{GitAuth, GitRef, Secret};
use crate::model::{SkipReason, Skipped};

/// Where and what to poll, with secrets already read.
#[derive(Debug, Clone)]
pub struct GitTarget {
    pub url: String,
    pub git_ref: GitRef,
    pub cache_dir: PathBuf,
    pub auth: ResolvedAuth,
    /// The limit for one job against the remote (`source.timeout`): a fetch still
    /// transferring then is cancelled, so it never outlives the poll that started it.
    pub timeout: Duration,
}

/// Credentials read from their files or variables.
#[derive(Debug, Clone, Default)]
pub struct ResolvedAuth {
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub ssh_key: Option<Secret>,
    pub known_hosts: Option<String>,
    pub insecure_skip_host_key_check: bool,
}

impl ResolvedAuth {
    pub fn from_config(auth: &GitAuth) -> Result<ResolvedAuth, SourceError> {
        let read = |r: &Option<crate::config::SecretRef>| -> Result<Option<Secret>, SourceError> {
            r.as_ref()
                .map(|r| r.read().map_err(|e| SourceError::Auth(e.to_string())))
                .transpose()
        };
        let known_hosts = match &auth.known_hosts {
            Some(p) => Some(std::fs::read_to_string(p).map_err(|e| {
                SourceError::Auth(format!("cannot read known_hosts {}: {e}", p.display()))
            })?),
            None => None,
        };
        Ok(ResolvedAuth {
            username: auth.username.clone(),
            password: read(&auth.token)?.or(read(&auth.password)?),
            ssh_key: read(&auth.ssh_key)?,
            known_hosts,
            insecure_skip_host_key_check: auth.insecure_skip_host_key_check,
        })
    }
}

/// What one poll found.
#[derive(Debug)]
pub enum Polled {
    /// The ref points where it pointed last time; nothing was fetched.
    Unchanged,
    /// A new commit, read into a snapshot. `forced` when the old commit is not an
    /// ancestor of the new one (a force push or a rollback of the branch).
    Changed { snapshot: Snapshot, forced: bool },
}

const LOCAL_REF: &str = "refs/pontoon/source";

fn callbacks(auth: &ResolvedAuth, deadline: Instant) -> RemoteCallbacks<'_> {
    let mut cb = RemoteCallbacks::new();
    // Returning false cancels the transfer: a fetch past its deadline stops here.
    cb.transfer_progress(move |_| Instant::now() < deadline);
    cb.sideband_progress(move |_| Instant::now() < deadline);
    let mut attempts = 0;
    cb.credentials(move |_url, username_from_url, allowed| {
        attempts += 1;
        if attempts > 3 {
            return Err(git2::Error::from_str("authentication failed"));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY)
            && let Some(key) = &auth.ssh_key
        {
            let user = username_from_url
                .or(auth.username.as_deref())
                .unwrap_or("git");
            return Cred::ssh_key_from_memory(user, None, key.expose(), None);
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT)
            && let Some(password) = &auth.password
        {
            let user = auth
                .username
                .as_deref()
                .or(username_from_url)
                .unwrap_or("pontoon");
            return Cred::userpass_plaintext(user, password.expose());
        }
        Err(git2::Error::from_str(
            "the remote asks for credentials and none are configured",
        ))
    });
    cb.certificate_check(move |cert, host| {
        let Some(hostkey) = cert.as_hostkey() else {
            // TLS certificates: libgit2 already verified them against the system roots.
            return Ok(CertificateCheckStatus::CertificatePassthrough);
        };
        if auth.insecure_skip_host_key_check {
            return Ok(CertificateCheckStatus::CertificateOk);
        }
        let Some(known) = &auth.known_hosts else {
            return Err(git2::Error::from_str(&format!(
                "unknown SSH host key for {host}: set source.auth.knownHosts (or insecureSkipHostKeyCheck)"
            )));
        };
        match hostkey.hostkey() {
            Some(key) if known_hosts_contains(known, host, key) => Ok(CertificateCheckStatus::CertificateOk),
            _ => Err(git2::Error::from_str(&format!(
                "SSH host key of {host} is not in known_hosts"
            ))),
        }
    });
    cb
}

/// Whether a known_hosts text lists `host` (as `host` or `[host]:port`) with exactly this
/// raw key. Hashed host names are not supported.
pub fn known_hosts_contains(known_hosts: &str, host: &str, raw_key: &[u8]) -> bool {
    use base64::Engine;
    known_hosts.lines().any(|line| {
        let mut parts = line.split_whitespace();
        let (Some(hosts), Some(_kind), Some(key)) = (parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        let host_matches = hosts.split(',').any(|h| {
            h == host
                || h.strip_prefix('[')
                    .and_then(|r| r.split_once("]:"))
                    .is_some_and(|(name, _)| name == host)
        });
        host_matches
            && base64::engine::general_purpose::STANDARD
                .decode(key)
                .is_ok_and(|k| k == raw_key)
    })
}

/// One job at a time per cache repository, in this process: a poll whose caller gave up
/// (its timeout) still runs until its own deadline, and a second fetch into the same
/// repository meanwhile (the next poll, a pull request's plan) could see it half-written,
/// or find it "unreadable" and delete it under the first. The next job waits for the
/// lock until its own deadline, then fails as a timeout.
fn hold_cache(dir: &Path, deadline: Instant) -> Result<CacheGuard, SourceError> {
    loop {
        if busy_caches().insert(dir.to_path_buf()) {
            return Ok(CacheGuard(dir.to_path_buf()));
        }
        if Instant::now() >= deadline {
            return Err(SourceError::Timeout(format!(
                "an earlier fetch into {} is still running",
                dir.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The caches a job holds right now.
fn busy_caches() -> MutexGuard<'static, BTreeSet<PathBuf>> {
    static BUSY: OnceLock<Mutex<BTreeSet<PathBuf>>> = OnceLock::new();
    BUSY.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Frees its cache for the next job when dropped, also when the job fails or panics.
struct CacheGuard(PathBuf);

impl Drop for CacheGuard {
    fn drop(&mut self) {
        busy_caches().remove(&self.0);
    }
}

fn open_cache(dir: &Path) -> Result<Repository, SourceError> {
    if dir.exists() {
        match Repository::open_bare(dir) {
            Ok(r) if r.odb().is_ok() => return Ok(r),
            _ => {
                tracing::warn!(cache = %dir.display(), "cache repository is unreadable; recreating it");
                std::fs::remove_dir_all(dir).map_err(|e| SourceError::Cache(e.to_string()))?;
            }
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| SourceError::Cache(e.to_string()))?;
    Repository::init_bare(dir).map_err(|e| SourceError::Cache(e.message().to_owned()))
}

/// Strips credentials from any URL that appears in a libgit2 message.
fn clean(e: &git2::Error) -> String {
    let msg = e.message();
    match (msg.find("://"), msg.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***{}", &msg[..s], &msg[at..]),
        _ => msg.to_owned(),
    }
}

/// One poll. `last` is the commit the previous successful poll returned.
pub fn poll(target: &GitTarget, last: Option<&str>) -> Result<Polled, SourceError> {
    let deadline = Instant::now() + target.timeout;
    let _cache = hold_cache(&target.cache_dir, deadline)?;
    let repo = open_cache(&target.cache_dir)?;
    let mut remote = repo
        .remote_anonymous(&target.url)
        .map_err(|e| SourceError::Remote(clean(&e)))?;

    // 1. Where does the ref point now? One ref advertisement, no objects.
    let wanted = match &target.git_ref {
        GitRef::Commit(c) => {
            Oid::from_str(c).map_err(|e| SourceError::Ref(e.message().to_owned()))?
        }
        GitRef::Branch(b) => advertised(
            &mut remote,
            &target.auth,
            deadline,
            &format!("refs/heads/{b}"),
            None,
        )?,
        GitRef::Tag(t) => advertised(
            &mut remote,
            &target.auth,
            deadline,
            &format!("refs/tags/{t}"),
            Some(&format!("refs/tags/{t}^{{}}")),
        )?,
    };
    let wanted_str = wanted.to_string();
    if last == Some(wanted_str.as_str()) {
        return Ok(Polled::Unchanged);
    }

    // 2. Fetch only what is missing.
    if repo.find_commit(wanted).is_err() {
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(callbacks(&target.auth, deadline));
        fo.download_tags(AutotagOption::None);
        // The first fetch is shallow where the transport allows it (libgit2's local
        // transport does not). Later ones fetch down to the commits the cache has, so
        // ancestry (force pushes) can still be told.
        let local = target.url.starts_with("file://")
            || !target.url.contains("://") && !target.url.contains('@');
        let first_fetch = repo.find_reference(LOCAL_REF).is_err();
        if !local && first_fetch {
            fo.depth(1);
        }
        let refspec = match &target.git_ref {
            GitRef::Branch(b) => format!("+refs/heads/{b}:{LOCAL_REF}"),
            GitRef::Tag(t) => format!("+refs/tags/{t}:{LOCAL_REF}"),
            GitRef::Commit(c) => c.clone(),
        };
        if let Err(e) = remote.fetch(&[refspec.as_str()], Some(&mut fo), None) {
            if !e.message().contains("shallow") {
                return Err(classify_fetch(&e, deadline));
            }
            let mut fo = FetchOptions::new();
            fo.remote_callbacks(callbacks(&target.auth, deadline));
            fo.download_tags(AutotagOption::None);
            remote
                .fetch(&[refspec.as_str()], Some(&mut fo), None)
                .map_err(|e| classify_fetch(&e, deadline))?;
        }
    }
    let commit = repo.find_commit(wanted).map_err(|e| {
        SourceError::Remote(format!(
            "fetched, but commit {wanted} is missing: {}",
            e.message()
        ))
    })?;
    let forced = match last.and_then(|l| Oid::from_str(l).ok()) {
        Some(old) if repo.find_commit(old).is_ok() => {
            !repo.graph_descendant_of(wanted, old).unwrap_or(false)
        }
        _ => false,
    };
    let snapshot = read_commit(&repo, &commit)?;
    Ok(Polled::Changed { snapshot, forced })
}

/// The commit a ref points to on the remote; an annotated tag's `peeled` name wins.
fn advertised(
    remote: &mut git2::Remote<'_>,
    auth: &ResolvedAuth,
    deadline: Instant,
    name: &str,
    peeled: Option<&str>,
) -> Result<Oid, SourceError> {
    let conn = remote
        .connect_auth(
            git2::Direction::Fetch,
            Some(callbacks(auth, deadline)),
            None,
        )
        .map_err(|e| classify(&e))?;
    let heads = conn.list().map_err(|e| SourceError::Remote(clean(&e)))?;
    let find = |n: &str| heads.iter().find(|h| h.name() == n).map(|h| h.oid());
    peeled
        .and_then(find)
        .or_else(|| find(name))
        .ok_or_else(|| SourceError::Ref(format!("{name} does not exist on the remote (deleted?)")))
}

/// A fetch's error: past the deadline, the progress callbacks cancelled it (libgit2 then
/// reports the cancel with no message of its own).
fn classify_fetch(e: &git2::Error, deadline: Instant) -> SourceError {
    if Instant::now() >= deadline {
        return SourceError::Timeout(
            "the fetch was still transferring at source.timeout and was cancelled".to_owned(),
        );
    }
    classify(e)
}

fn classify(e: &git2::Error) -> SourceError {
    let msg = clean(e);
    let lower = msg.to_ascii_lowercase();
    // libgit2 replaces the host key callback's own message with this one.
    if lower.contains("unknown remote ssh hostkey") {
        return SourceError::Auth(
            "the SSH host key of the remote is unknown or does not match: list it in the \
             file source.auth.knownHosts names (or set insecureSkipHostKeyCheck)"
                .to_owned(),
        );
    }
    if e.class() == git2::ErrorClass::Http && (lower.contains("401") || lower.contains("403"))
        || lower.contains("authentication")
        || lower.contains("credentials")
        || lower.contains("host key")
    {
        SourceError::Auth(msg)
    } else {
        SourceError::Remote(msg)
    }
}

/// Reads every file of a commit. Symlinks, submodules and names that are not UTF-8 are
/// listed, never followed.
pub fn read_commit(repo: &Repository, commit: &git2::Commit) -> Result<Snapshot, SourceError> {
    let tree = commit
        .tree()
        .map_err(|e| SourceError::Cache(e.message().to_owned()))?;
    let mut files = BTreeMap::new();
    let mut skipped = Vec::new();
    let mut err = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            let name = String::from_utf8_lossy(entry.name_bytes());
            skipped.push(Skipped::new(
                format!("{dir}{name}"),
                SkipReason::NonUtf8Name,
            ));
            return git2::TreeWalkResult::Skip;
        };
        let path = format!("{dir}{name}");
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Blob), 0o120000) => {
                skipped.push(Skipped::new(path, SkipReason::Symlink))
            }
            (Some(ObjectType::Blob), _) => match repo.find_blob(entry.id()) {
                Ok(b) => {
                    files.insert(path, b.content().to_vec());
                }
                Err(e) => {
                    err = Some(e);
                    return git2::TreeWalkResult::Abort;
                }
            },
            (Some(ObjectType::Commit), _) => {
                skipped.push(Skipped::new(path, SkipReason::Submodule))
            }
            _ => {}
        }
        git2::TreeWalkResult::Ok
    })
    .map_err(|e| SourceError::Cache(e.message().to_owned()))?;
    if let Some(e) = err {
        return Err(SourceError::Cache(e.message().to_owned()));
    }
    let author = commit.author();
    Ok(Snapshot {
        revision: commit.id().to_string(),
        files,
        skipped,
        author: format!(
            "{} <{}>",
            author.name().unwrap_or(""),
            author.email().unwrap_or("")
        ),
        message: commit.summary().ok().flatten().unwrap_or("").to_owned(),
    })
}

/// Reads commit `sha` of the tracked repository: from the cache, or fetched by its id
/// when the cache lacks it (a restarted daemon whose units run an older commit than the
/// one the ref points to; a forge that does not serve commits by id refuses the fetch).
pub fn read_revision(target: &GitTarget, sha: &str) -> Result<Snapshot, SourceError> {
    let wanted = Oid::from_str(sha).map_err(|e| SourceError::Ref(e.message().to_owned()))?;
    let deadline = Instant::now() + target.timeout;
    let _cache = hold_cache(&target.cache_dir, deadline)?;
    let repo = open_cache(&target.cache_dir)?;
    if repo.find_commit(wanted).is_err() {
        let mut remote = repo
            .remote_anonymous(&target.url)
            .map_err(|e| SourceError::Remote(clean(&e)))?;
        let mut fo = FetchOptions::new();
        fo.remote_callbacks(callbacks(&target.auth, deadline));
        fo.download_tags(AutotagOption::None);
        remote
            .fetch(&[sha], Some(&mut fo), None)
            .map_err(|e| classify_fetch(&e, deadline))?;
    }
    let commit = repo
        .find_commit(wanted)
        .map_err(|e| SourceError::Ref(format!("commit {sha}: {}", e.message())))?;
    read_commit(&repo, &commit)
}

/// Fetches a pull request's head (`refname` on the same remote, e.g. `refs/pull/7/head`)
/// and reads commit `sha`. The commit must be what the ref points to or an ancestor of it,
/// so a webhook cannot name an arbitrary object; nothing of the tracked ref changes.
pub fn fetch_review(target: &GitTarget, refname: &str, sha: &str) -> Result<Snapshot, SourceError> {
    let wanted = Oid::from_str(sha).map_err(|e| SourceError::Ref(e.message().to_owned()))?;
    let deadline = Instant::now() + target.timeout;
    let _cache = hold_cache(&target.cache_dir, deadline)?;
    let repo = open_cache(&target.cache_dir)?;
    let local = format!("refs/pontoon/review/{}", refname.replace('/', "-"));
    let mut remote = repo
        .remote_anonymous(&target.url)
        .map_err(|e| SourceError::Remote(clean(&e)))?;
    let mut fo = FetchOptions::new();
    fo.remote_callbacks(callbacks(&target.auth, deadline));
    fo.download_tags(AutotagOption::None);
    remote
        .fetch(
            &[format!("+{refname}:{local}").as_str()],
            Some(&mut fo),
            None,
        )
        .map_err(|e| classify_fetch(&e, deadline))?;
    let head = repo
        .refname_to_id(&local)
        .map_err(|_| SourceError::Ref(format!("{refname} does not exist on the remote")))?;
    if head != wanted && !repo.graph_descendant_of(head, wanted).unwrap_or(false) {
        return Err(SourceError::Ref(format!(
            "{refname} points to {head}, which does not contain {sha} (updated since the event?)"
        )));
    }
    let commit = repo
        .find_commit(wanted)
        .map_err(|e| SourceError::Ref(format!("commit {sha}: {}", e.message())))?;
    read_commit(&repo, &commit)
}
