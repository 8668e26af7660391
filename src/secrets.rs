//! Bearer tokens read from a file, one per line, and re-read when the file changes — or from
//! an SSM SecureString parameter, read again every `auth.token_ssm_refresh_interval` by
//! [`TokenRefresher`].
//!
//! Several lines are several valid tokens, which gives a rotation its overlap window: add the
//! new token beside the old one, switch the senders, then remove the old line. The file is a
//! mounted Secret, which the kubelet replaces on update (a symlink swap), so the service
//! notices within [`RELOAD_CHECK_INTERVAL`] without a restart.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::{Serialize, Serializer};
use subtle::ConstantTimeEq;

/// How often a request may trigger a look at the token file (one `stat`; a read only when
/// its modification time or length changed).
pub const RELOAD_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

struct Loaded {
    tokens: Vec<Vec<u8>>,
    stamp: Option<Stamp>,
    checked_at: Instant,
}

/// The accepted tokens of one file or parameter; clones share the same reloading set.
#[derive(Clone)]
pub struct TokenFile {
    origin: Origin,
    loaded: Arc<Mutex<Loaded>>,
}

/// Where the tokens come from.
#[derive(Clone)]
enum Origin {
    /// A file, re-read when it changes.
    File(PathBuf),
    /// An SSM parameter, replaced by [`TokenRefresher`].
    Parameter(String),
}

/// The tokens of `text`: non-empty lines, trimmed; lines starting with `#` are comments.
fn parse_tokens(text: &str) -> Vec<Vec<u8>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.as_bytes().to_vec())
        .collect()
}

/// Reads the tokens of `path`.
fn read_tokens(path: &Path) -> Result<(Vec<Vec<u8>>, Option<Stamp>), String> {
    let stamp = stamp_of(path);
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let tokens = parse_tokens(&text);
    if tokens.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((tokens, stamp))
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

impl TokenFile {
    /// Reads `path`; an unreadable file or one without a token is an error (the webhook never
    /// runs open).
    pub fn load(path: &Path) -> Result<TokenFile, String> {
        let (tokens, stamp) = read_tokens(path)?;
        Ok(TokenFile {
            origin: Origin::File(path.to_path_buf()),
            loaded: Arc::new(Mutex::new(Loaded { tokens, stamp, checked_at: Instant::now() })),
        })
    }

    /// The tokens of SSM parameter `name`, whose value is `text`; a value without a token is
    /// an error (the webhook never runs open).
    pub fn from_parameter(name: &str, text: &str) -> Result<TokenFile, String> {
        let tokens = parse_tokens(text);
        if tokens.is_empty() {
            return Err("holds no token (one per line; # starts a comment)".into());
        }
        Ok(TokenFile {
            origin: Origin::Parameter(name.into()),
            loaded: Arc::new(Mutex::new(Loaded { tokens, stamp: None, checked_at: Instant::now() })),
        })
    }

    /// Takes a new value of the parameter: the tokens it holds from now on, or an error and
    /// the previous tokens kept when it holds none. Returns how many there are.
    pub fn replace(&self, text: &str) -> Result<usize, String> {
        let tokens = parse_tokens(text);
        if tokens.is_empty() {
            return Err("holds no token; keeping the previous tokens".into());
        }
        let count = tokens.len();
        self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).tokens = tokens;
        Ok(count)
    }

    /// Whether `given` equals one of the tokens, compared in constant time against every one.
    /// Re-reads the file first when it changed; a file that became unreadable or empty keeps
    /// the last good tokens (a half-written Secret must not lock Alertmanager out).
    pub fn accepts(&self, given: &[u8]) -> bool {
        let mut loaded = self.loaded.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Origin::File(path) = &self.origin
            && loaded.checked_at.elapsed() >= RELOAD_CHECK_INTERVAL
        {
            loaded.checked_at = Instant::now();
            let stamp = stamp_of(path);
            if stamp != loaded.stamp {
                match read_tokens(path) {
                    Ok((tokens, stamp)) => {
                        tracing::info!(file = %path.display(), tokens = tokens.len(), "token file reloaded");
                        loaded.tokens = tokens;
                        loaded.stamp = stamp;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "token file changed but cannot be used; keeping the previous tokens");
                    }
                }
            }
        }
        loaded.tokens.iter().fold(false, |found, token| found | bool::from(given.ct_eq(token)))
    }

    /// Whether the two files hold a token in common (each credential must be its own).
    pub fn shares_a_token_with(&self, other: &TokenFile) -> bool {
        let mine = self.loaded.lock().unwrap_or_else(|p| p.into_inner()).tokens.clone();
        let theirs = other.loaded.lock().unwrap_or_else(|p| p.into_inner());
        mine.iter().any(|t| theirs.tokens.contains(t))
    }

    /// Where the tokens come from: a file path, or `ssm:<name>`.
    pub fn origin(&self) -> String {
        match &self.origin {
            Origin::File(path) => path.display().to_string(),
            Origin::Parameter(name) => format!("ssm:{name}"),
        }
    }
}

/// Reads the webhook token's SSM parameter every `auth.token_ssm_refresh_interval` and swaps
/// the accepted tokens, so a rotation (new token beside the old, then the old removed) needs
/// no restart. A failed read keeps the tokens in force: an SSM outage must not lock
/// Alertmanager out. Failures are counted and logged once per change of state.
pub struct TokenRefresher {
    parameters: Arc<dyn crate::adapters::ssm::Parameters>,
    name: String,
    tokens: TokenFile,
    interval: Duration,
    failures: prometheus_client::metrics::counter::Counter,
    failing: bool,
}

impl TokenRefresher {
    /// A refresher of `tokens` from parameter `name`.
    pub fn new(
        parameters: Arc<dyn crate::adapters::ssm::Parameters>,
        name: String,
        tokens: TokenFile,
        interval: Duration,
        failures: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        TokenRefresher { parameters, name, tokens, interval, failures, failing: false }
    }

    /// One read: replaces the tokens or keeps them. Returns whether the read succeeded.
    pub async fn refresh_once(&mut self) -> bool {
        let outcome = match self.parameters.get(&self.name).await {
            Ok(text) => self.tokens.replace(&text),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(count) => {
                if self.failing {
                    tracing::info!(parameter = %self.name, tokens = count, "webhook token readable again");
                }
                self.failing = false;
                true
            }
            Err(error) => {
                self.failures.inc();
                if !self.failing {
                    tracing::warn!(parameter = %self.name, %error, "webhook token refresh failed; keeping the tokens in force");
                }
                self.failing = true;
                false
            }
        }
    }

    /// Runs until the process ends.
    pub async fn run(mut self) {
        loop {
            tokio::time::sleep(self.interval).await;
            self.refresh_once().await;
        }
    }
}

impl fmt::Debug for TokenFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for TokenFile {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    /// Lets the next `accepts` look at the file again.
    fn age(tokens: &TokenFile) {
        tokens.loaded.lock().unwrap().checked_at = Instant::now() - RELOAD_CHECK_INTERVAL;
    }

    #[test]
    fn every_line_is_a_token_and_comments_are_not() {
        let (_dir, path) = file("# rotation 2026-12\nold-token\n\n  new-token  \n");
        let tokens = TokenFile::load(&path).unwrap();
        assert!(tokens.accepts(b"old-token"));
        assert!(tokens.accepts(b"new-token"));
        for bad in [&b""[..], b"# rotation 2026-12", b"old-toke", b"new-token  ", b"old-token\nnew-token"] {
            assert!(!tokens.accepts(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_changed_file_is_reread_and_a_broken_one_keeps_the_last_tokens() {
        let (_dir, path) = file("old\n");
        let tokens = TokenFile::load(&path).unwrap();
        std::fs::write(&path, "old\nnew\n").unwrap();
        age(&tokens);
        assert!(tokens.accepts(b"new") && tokens.accepts(b"old"), "overlap window");
        std::fs::write(&path, "new-only\n").unwrap();
        age(&tokens);
        assert!(tokens.accepts(b"new-only"));
        assert!(!tokens.accepts(b"old"), "the removed token is refused");
        std::fs::write(&path, "\n").unwrap();
        age(&tokens);
        assert!(tokens.accepts(b"new-only"), "an emptied file keeps the last tokens");
    }

    #[tokio::test]
    async fn a_rotated_parameter_is_taken_and_an_outage_or_an_empty_value_keeps_the_tokens() {
        use crate::adapters::ssm::fake::FakeParameters;
        let name = "/k3s-autoscaler/prod/webhook-token";
        let ssm = Arc::new(FakeParameters::default());
        ssm.put(name, "old\n");
        let tokens = TokenFile::from_parameter(name, "old\n").unwrap();
        assert_eq!(tokens.origin(), format!("ssm:{name}"));
        let failures = prometheus_client::metrics::counter::Counter::default();
        let mut refresher = TokenRefresher::new(
            ssm.clone(),
            name.into(),
            tokens.clone(),
            Duration::from_secs(60),
            failures.clone(),
        );

        ssm.put(name, "old\nnew\n");
        assert!(refresher.refresh_once().await);
        assert!(tokens.accepts(b"old") && tokens.accepts(b"new"), "overlap window");
        ssm.put(name, "new\n");
        assert!(refresher.refresh_once().await);
        assert!(tokens.accepts(b"new") && !tokens.accepts(b"old"), "the removed token is refused");

        ssm.down.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(!refresher.refresh_once().await);
        assert!(tokens.accepts(b"new"), "SSM down: the tokens in force stay");
        ssm.down.store(false, std::sync::atomic::Ordering::SeqCst);
        ssm.put(name, "# emptied by mistake\n");
        assert!(!refresher.refresh_once().await);
        assert!(tokens.accepts(b"new"), "an emptied value keeps the tokens");
        assert_eq!(failures.get(), 2);
        assert!(TokenFile::from_parameter(name, "\n").is_err());
    }

    #[test]
    fn empty_and_missing_files_are_errors() {
        let (_dir, path) = file("\n# only a comment\n");
        assert!(TokenFile::load(&path).unwrap_err().ends_with("is empty"));
        assert!(TokenFile::load(Path::new("/nonexistent/token")).unwrap_err().starts_with("cannot read"));
    }
}
