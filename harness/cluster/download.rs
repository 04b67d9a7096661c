//! Downloads of the pinned upstream manifests a run applies (the Gateway API CRDs, bookinfo). One
//! client with a connect deadline and a total deadline per attempt, retried with backoff, the cause
//! in the error: `reqwest::get` has no timeout at all (reqwest 0.13 `Client::new` docs: "no timeout
//! by default"), so one stalled download hung the whole run.

use std::time::Duration;

use crate::cluster::live::{LiveError, with_causes};

/// How a manifest is downloaded.
#[derive(Debug, Clone)]
pub struct Download {
    /// Deadline for the TCP and TLS connection of one attempt.
    pub connect: Duration,
    /// Deadline for one whole attempt, body included.
    pub total: Duration,
    /// Attempts in all (the first one included).
    pub attempts: u32,
    /// Pause before the second attempt; doubled before each later one.
    pub backoff: Duration,
}

/// Manifests are a few hundred KiB (the Gateway API bundle is the largest, ~1 MiB): a minute for one
/// attempt is generous on a slow link and short beside a run.
pub const MANIFESTS: Download = Download {
    connect: Duration::from_secs(10),
    total: Duration::from_secs(60),
    attempts: 4,
    backoff: Duration::from_secs(2),
};

/// Why an attempt failed, and whether another one may succeed.
struct Failed {
    message: String,
    retry: bool,
}

impl Download {
    /// The body of `url` as text, after at most [`Download::attempts`] attempts.
    pub async fn text(&self, url: &str) -> Result<String, LiveError> {
        let what = format!("GET {url}");
        let http = reqwest::Client::builder()
            .connect_timeout(self.connect)
            .timeout(self.total)
            .build()
            .map_err(|e| LiveError::http(&what, &e))?;
        let mut pause = self.backoff;
        let mut attempt = 1;
        loop {
            match self.attempt(&http, url).await {
                Ok(text) => return Ok(text),
                Err(failed) if failed.retry && attempt < self.attempts => {
                    tracing::warn!(
                        "{what}: attempt {attempt} of {} failed: {}; again in {pause:?}",
                        self.attempts,
                        failed.message
                    );
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                Err(failed) => {
                    let message = format!("attempt {attempt} of {}: {}", self.attempts, failed.message);
                    return Err(LiveError::Http { what, message });
                }
            }
        }
    }

    async fn attempt(&self, http: &reqwest::Client, url: &str) -> Result<String, Failed> {
        let transport = |e: reqwest::Error| Failed { message: with_causes(&e), retry: true };
        let resp = http.get(url).send().await.map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            // A server error or throttling may pass; a 404 of a pinned URL will not.
            let retry = status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS;
            return Err(Failed { message: format!("HTTP {status}"), retry });
        }
        resp.text().await.map_err(transport)
    }
}
