//! The GitHub REST API calls kdeploy makes, over octocrab's HTTP client.
//!
//! octocrab supplies the client (auth header only towards the API host,
//! `GITHUB_API_URL` as base for GitHub Enterprise); this module adds the
//! retry policy GitHub asks integrators to follow: 5xx and timeouts with
//! backoff, `429`/secondary limits honouring `retry-after`, and primary rate
//! limits (`x-ratelimit-remaining: 0`) waiting until `x-ratelimit-reset`, all
//! bounded. A 403 that is not a rate limit is a permission error and is
//! returned at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::Value;

mod git;
mod issues;

pub use git::{Commit, PullRequest};
pub use issues::Issue;

/// The error returned by API calls.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// GitHub answered with an error status.
    #[error("GitHub API {method} {path} returned {status}: {message}")]
    Status {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status.
        status: u16,
        /// GitHub's `message`.
        message: String,
        /// `x-accepted-github-permissions`: the permission sets that would
        /// have allowed the call (`checks=write; ...`), when GitHub sent it.
        accepted: Option<String>,
    },
    /// The request could not be sent or the answer read.
    #[error("GitHub API {method} {path} failed: {detail}")]
    Transport {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// What went wrong.
        detail: String,
    },
    /// GitHub answered with a redirect kdeploy would not follow.
    #[error("GitHub API {method} {path} was redirected ({status}) to {location}: {why}")]
    Redirect {
        /// HTTP method.
        method: &'static str,
        /// Request path.
        path: String,
        /// HTTP status (301, 302, 307, 308, or another 3xx).
        status: u16,
        /// The `Location` GitHub named.
        location: String,
        /// Why it was not followed.
        why: String,
    },
    /// The client could not be built.
    #[error("cannot set up the GitHub client for {0}")]
    Setup(String),
}

/// How many redirects one call follows (a renamed repository takes one).
const MAX_REDIRECTS: usize = 3;

impl Error {
    /// The HTTP status, when GitHub answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The permission a refused call needed, as a workflow writes it
    /// (`` `checks: write` ``), or `None` when the call was not refused for
    /// want of one (5xx, network, 422 ...). GitHub names the permission in
    /// `x-accepted-github-permissions`; `fallback` is used where it does not.
    pub fn missing_permission(&self, fallback: &str) -> Option<String> {
        let Error::Status {
            status: 403,
            accepted,
            ..
        } = self
        else {
            return None;
        };
        let sets: Vec<String> = accepted
            .as_deref()
            .unwrap_or("")
            .split(';')
            .filter_map(|set| {
                let perms: Vec<String> = set
                    .split(',')
                    .filter_map(|p| p.trim().split_once('='))
                    .map(|(k, v)| format!("`{}: {}`", k.trim().replace('_', "-"), v.trim()))
                    .collect();
                (!perms.is_empty()).then(|| perms.join(" and "))
            })
            .collect();
        Some(if sets.is_empty() {
            format!("`{fallback}`")
        } else {
            sets.join(" or ")
        })
    }

    /// `what` failed: the error, and the permission to grant when that was
    /// the reason (and only then).
    pub fn explain(&self, what: &str, fallback_permission: &str) -> String {
        match self.missing_permission(fallback_permission) {
            Some(p) => format!("{what}: {self} (the token needs {p} in the job's `permissions:`)"),
            None => format!("{what}: {self}"),
        }
    }
}

/// How failed requests are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all (1 = no retry).
    pub attempts: u32,
    /// First backoff for 5xx; doubled each time, with jitter.
    pub base: Duration,
    /// Longest single wait, including `retry-after` and rate-limit resets.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_secs(1),
            max_wait: Duration::from_secs(60),
        }
    }
}

/// A repository's API.
pub struct GitHub {
    client: octocrab::Octocrab,
    /// The API's scheme and authority (`https://api.github.com`): the only
    /// place a redirect is followed to, with the token.
    origin: String,
    repo: String,
    retry: RetryPolicy,
    /// [`GitHub::own_login`], once asked.
    login: std::sync::OnceLock<String>,
}

/// An issue or PR comment (the fields kdeploy uses).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Comment {
    /// Comment id.
    pub id: u64,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// Link for humans.
    #[serde(default)]
    pub html_url: Option<String>,
    /// Who wrote it (GitHub sends `null` for a deleted account).
    #[serde(default)]
    pub user: Option<Author>,
}

/// The author of a comment.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Author {
    /// `octocat`, `github-actions[bot]`.
    pub login: String,
    /// `User`, `Bot`, `Organization`.
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// The login of `GITHUB_TOKEN`'s comments: an installation token of the
/// GitHub Actions app, which `GET /user` does not answer.
pub const ACTIONS_BOT: &str = "github-actions[bot]";

enum Method {
    Get,
    Post,
    Patch,
    Delete,
}

impl Method {
    fn name(&self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// What a response says about retrying.
enum Verdict {
    Done,
    RetryAfter(Duration),
    Fail,
}

fn header<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn verdict(status: u16, headers: &http::HeaderMap, attempt: u32, policy: &RetryPolicy) -> Verdict {
    if status < 400 {
        return Verdict::Done;
    }
    let retry_after = header(headers, "retry-after")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let exhausted = header(headers, "x-ratelimit-remaining") == Some("0");
    let reset = header(headers, "x-ratelimit-reset")
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|reset| {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            Duration::from_secs(reset.saturating_sub(now) + 1)
        });
    let backoff = policy.base.saturating_mul(1 << attempt.min(6));
    let jitter = backoff.mul_f64(fastrand::f64() * 0.5);
    match status {
        429 => Verdict::RetryAfter(retry_after.or(reset).unwrap_or(backoff + jitter)),
        403 if retry_after.is_some() => Verdict::RetryAfter(retry_after.unwrap_or(backoff)),
        403 if exhausted => Verdict::RetryAfter(reset.unwrap_or(backoff + jitter)),
        500..=599 => Verdict::RetryAfter(retry_after.unwrap_or(backoff + jitter)),
        _ => Verdict::Fail,
    }
}

impl GitHub {
    /// A client for `repo` (`owner/name`) at `api_url` (`GITHUB_API_URL`).
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn new(
        api_url: &str,
        token: &str,
        repo: &str,
        retry: RetryPolicy,
    ) -> Result<GitHub, Error> {
        let client = octocrab::Octocrab::builder()
            .base_uri(api_url)
            .map_err(|e| Error::Setup(format!("{api_url}: {e}")))?
            .personal_token(token.to_string())
            .build()
            .map_err(|e| Error::Setup(format!("{api_url}: {e}")))?;
        let origin = api_url
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| Some(format!("{}://{}", u.scheme_str()?, u.authority()?)))
            .ok_or_else(|| Error::Setup(format!("{api_url}: not an absolute URL")))?;
        Ok(GitHub {
            client,
            origin,
            repo: repo.to_string(),
            retry,
            login: std::sync::OnceLock::new(),
        })
    }

    /// `owner/name`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    /// The login whose comments are this token's: `GET /user` for a user's
    /// token; an installation token (GitHub answers 403 "Resource not
    /// accessible by integration" there) is `KDEPLOY_COMMENT_AUTHOR` when
    /// the runner names its app's bot (`my-app[bot]`), else
    /// `github-actions[bot]`. Asked once per client.
    ///
    /// # Errors
    /// API errors other than that 403.
    pub async fn own_login(&self) -> Result<String, Error> {
        if let Some(login) = self.login.get() {
            return Ok(login.clone());
        }
        let login = match self.send(Method::Get, "/user", None).await {
            Ok((_, v)) => v["login"]
                .as_str()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .ok_or_else(|| Error::Transport {
                    method: "GET",
                    path: "/user".into(),
                    detail: "the answer names no login".into(),
                })?,
            Err(Error::Status {
                status: 401 | 403, ..
            }) => std::env::var("KDEPLOY_COMMENT_AUTHOR")
                .ok()
                .filter(|l| !l.trim().is_empty())
                .map_or_else(|| ACTIONS_BOT.to_string(), |l| l.trim().to_string()),
            Err(e) => return Err(e),
        };
        let _ = self.login.set(login.clone());
        Ok(login)
    }

    /// Sends a request with retries; returns status, headers and JSON body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(http::HeaderMap, Value), Error> {
        // Comments, check runs and statuses never carry a decrypted value.
        let masked = body.map(|b| {
            let mut b = b.clone();
            crate::secrets::mask::redact_value(&mut b);
            b
        });
        let body = masked.as_ref();
        let mut attempt = 0;
        let mut target = path.to_string();
        let mut hops = 0;
        loop {
            let path = target.as_str();
            let transport = |detail: String| Error::Transport {
                method: method.name(),
                path: path.to_string(),
                detail,
            };
            let result = match method {
                Method::Get => self.client._get(path).await,
                Method::Post => self.client._post(path, body).await,
                Method::Patch => self.client._patch(path, body).await,
                Method::Delete => self.client._delete(path, body).await,
            };
            attempt += 1;
            let response = match result {
                Ok(r) => r,
                Err(e) if attempt < self.retry.attempts => {
                    let _ = e;
                    tokio::time::sleep(self.retry.base.saturating_mul(attempt)).await;
                    continue;
                }
                Err(e) => return Err(transport(e.to_string())),
            };
            let status = response.status().as_u16();
            let headers = response.headers().clone();
            // GitHub redirects a renamed or transferred repository: 301 on
            // reads, 307 on writes, to `/repositories/<id>/…`. It documents
            // that the request is repeated verbatim there: same method, same
            // body. Never a success by itself, never to another host.
            if (300..400).contains(&status) {
                let location = header(&headers, "location").unwrap_or("").to_string();
                let refuse = |why: &str| Error::Redirect {
                    method: method.name(),
                    path: path.to_string(),
                    status,
                    location: location.clone(),
                    why: why.to_string(),
                };
                if !matches!(status, 301 | 302 | 307 | 308) {
                    return Err(refuse("not a redirect GitHub documents"));
                }
                if location.is_empty() {
                    return Err(refuse("the answer names no Location"));
                }
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(refuse(&format!(
                        "more than {MAX_REDIRECTS} redirects in a row"
                    )));
                }
                let next = if location.starts_with('/') {
                    location.clone()
                } else if let Some(rest) = location.strip_prefix(&self.origin)
                    && (rest.is_empty() || rest.starts_with('/'))
                {
                    location.clone()
                } else {
                    return Err(refuse(&format!(
                        "another host than the API ({}): the token is sent only to the API",
                        self.origin
                    )));
                };
                target = next;
                attempt = 0;
                continue;
            }
            let text = self
                .client
                .body_to_string(response)
                .await
                .map_err(|e| transport(e.to_string()))?;
            match verdict(status, &headers, attempt, &self.retry) {
                Verdict::Done => {
                    let value = if text.trim().is_empty() {
                        Value::Null
                    } else {
                        serde_json::from_str(&text)
                            .map_err(|e| transport(format!("invalid JSON: {e}")))?
                    };
                    return Ok((headers, value));
                }
                Verdict::RetryAfter(wait)
                    if attempt < self.retry.attempts && wait <= self.retry.max_wait =>
                {
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    let message = serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| error_message(&v))
                        .unwrap_or_else(|| text.chars().take(200).collect());
                    return Err(Error::Status {
                        method: method.name(),
                        path: path.to_string(),
                        status,
                        message,
                        accepted: header(&headers, "x-accepted-github-permissions")
                            .map(str::to_string),
                    });
                }
            }
        }
    }

    /// Every comment of issue/PR `number`, following `Link: rel="next"`
    /// verbatim (GitHub may switch to `/repositories/{id}/…` URLs).
    ///
    /// # Errors
    /// API errors.
    pub async fn list_comments(&self, number: u64) -> Result<Vec<Comment>, Error> {
        let mut url = format!("/repos/{}/issues/{number}/comments?per_page=100", self.repo);
        let mut out = Vec::new();
        for _ in 0..100 {
            let (headers, value) = self.send(Method::Get, &url, None).await?;
            let page: Vec<Comment> =
                serde_json::from_value(value).map_err(|e| Error::Transport {
                    method: "GET",
                    path: url.clone(),
                    detail: format!("unexpected comment list: {e}"),
                })?;
            out.extend(page);
            match header(&headers, "link").and_then(next_link) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Creates a comment on issue/PR `number`.
    ///
    /// # Errors
    /// API errors.
    pub async fn create_comment(&self, number: u64, body: &str) -> Result<Comment, Error> {
        let path = format!("/repos/{}/issues/{number}/comments", self.repo);
        let (_, v) = self
            .send(
                Method::Post,
                &path,
                Some(&serde_json::json!({ "body": body })),
            )
            .await?;
        parse_comment(v, &path)
    }

    /// Replaces a comment's body.
    ///
    /// # Errors
    /// API errors.
    pub async fn update_comment(&self, id: u64, body: &str) -> Result<Comment, Error> {
        let path = format!("/repos/{}/issues/comments/{id}", self.repo);
        let (_, v) = self
            .send(
                Method::Patch,
                &path,
                Some(&serde_json::json!({ "body": body })),
            )
            .await?;
        parse_comment(v, &path)
    }

    /// Deletes a comment.
    ///
    /// # Errors
    /// API errors.
    pub async fn delete_comment(&self, id: u64) -> Result<(), Error> {
        let path = format!("/repos/{}/issues/comments/{id}", self.repo);
        self.send(Method::Delete, &path, None).await.map(|_| ())
    }
}

impl GitHub {
    /// Creates a check run; returns its id.
    ///
    /// # Errors
    /// API errors (403 without `checks: write`).
    pub async fn create_check_run(&self, body: &Value) -> Result<u64, Error> {
        let path = format!("/repos/{}/check-runs", self.repo);
        let (_, v) = self.send(Method::Post, &path, Some(body)).await?;
        id_of(&v, &path)
    }

    /// Updates a check run.
    ///
    /// # Errors
    /// API errors.
    pub async fn update_check_run(&self, id: u64, body: &Value) -> Result<(), Error> {
        let path = format!("/repos/{}/check-runs/{id}", self.repo);
        self.send(Method::Patch, &path, Some(body))
            .await
            .map(|_| ())
    }

    /// The output summaries of the check runs named `name` on commit `sha`
    /// that a GitHub Actions workflow (the `github-actions` app) created,
    /// newest first.
    ///
    /// # Errors
    /// API errors.
    pub async fn check_run_summaries(&self, sha: &str, name: &str) -> Result<Vec<String>, Error> {
        // Check names are kdeploy's own (`kdeploy plan`): only spaces need
        // escaping in a query.
        let query = name
            .replace('%', "%25")
            .replace(' ', "%20")
            .replace('&', "%26");
        let path = format!(
            "/repos/{}/commits/{sha}/check-runs?check_name={query}&per_page=100",
            self.repo
        );
        let (_, v) = self.send(Method::Get, &path, None).await?;
        Ok(v["check_runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|r| r["app"]["slug"] == "github-actions")
            .filter_map(|r| r["output"]["summary"].as_str().map(str::to_string))
            .collect())
    }

    /// Creates a deployment; returns its id.
    ///
    /// # Errors
    /// API errors.
    pub async fn create_deployment(&self, body: &Value) -> Result<u64, Error> {
        let path = format!("/repos/{}/deployments", self.repo);
        let (_, v) = self.send(Method::Post, &path, Some(body)).await?;
        id_of(&v, &path)
    }

    /// Adds a status to a deployment.
    ///
    /// # Errors
    /// API errors.
    pub async fn create_deployment_status(&self, id: u64, body: &Value) -> Result<(), Error> {
        let path = format!("/repos/{}/deployments/{id}/statuses", self.repo);
        self.send(Method::Post, &path, Some(body)).await.map(|_| ())
    }
}

/// GitHub's `message`, with the `errors[].message` a 422 carries ("A pull
/// request already exists for …"), which say more than "Validation Failed".
fn error_message(v: &Value) -> Option<String> {
    let message = v["message"].as_str()?.to_string();
    let details: Vec<&str> = v["errors"]
        .as_array()
        .map(|es| es.iter().filter_map(|e| e["message"].as_str()).collect())
        .unwrap_or_default();
    Some(if details.is_empty() {
        message
    } else {
        format!("{message}: {}", details.join("; "))
    })
}

fn id_of(v: &Value, path: &str) -> Result<u64, Error> {
    v["id"].as_u64().ok_or_else(|| Error::Transport {
        method: "POST",
        path: path.to_string(),
        detail: "the answer has no id".into(),
    })
}

fn parse_comment(v: Value, path: &str) -> Result<Comment, Error> {
    serde_json::from_value(v).map_err(|e| Error::Transport {
        method: "POST",
        path: path.to_string(),
        detail: format!("unexpected comment: {e}"),
    })
}

/// The `rel="next"` URL of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        params
            .split(';')
            .any(|p| p.trim() == "rel=\"next\"")
            .then(|| {
                url.trim()
                    .trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string()
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, accepted: Option<&str>) -> Error {
        Error::Status {
            method: "POST",
            path: "/repos/o/r/check-runs".into(),
            status,
            message: "Resource not accessible by integration".into(),
            accepted: accepted.map(str::to_string),
        }
    }

    #[test]
    fn the_missing_permission_is_the_one_github_names() {
        // The header's example from GitHub's changelog: sets split by `;`.
        let e = refused(
            403,
            Some("repository_projects=write; organization_projects=admin"),
        );
        assert_eq!(
            e.missing_permission("checks: write").as_deref(),
            Some("`repository-projects: write` or `organization-projects: admin`")
        );
        let e = refused(403, Some("contents=read,pull_requests=write"));
        assert_eq!(
            e.missing_permission("x: y").as_deref(),
            Some("`contents: read` and `pull-requests: write`")
        );
        assert_eq!(
            refused(403, None)
                .missing_permission("checks: write")
                .as_deref(),
            Some("`checks: write`")
        );
        for e in [
            refused(422, Some("checks=write")),
            refused(502, None),
            Error::Transport {
                method: "POST",
                path: "/x".into(),
                detail: "connection refused".into(),
            },
        ] {
            assert_eq!(e.missing_permission("checks: write"), None, "{e}");
            assert!(!e.explain("no check run", "checks: write").contains("needs"));
        }
    }

    #[test]
    fn next_link_is_taken_verbatim() {
        let link = r#"<https://api.github.com/repositories/417862/issues/comments?page=2>; rel="next", <https://api.github.com/repositories/417862/issues/comments?page=73>; rel="last""#;
        assert_eq!(
            next_link(link).as_deref(),
            Some("https://api.github.com/repositories/417862/issues/comments?page=2")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
    }

    #[test]
    fn permission_403_is_not_retried_but_rate_limit_403_is() {
        let p = RetryPolicy::default();
        let mut h = http::HeaderMap::new();
        h.insert("x-ratelimit-remaining", "4999".parse().unwrap());
        assert!(matches!(verdict(403, &h, 1, &p), Verdict::Fail));
        h.insert("x-ratelimit-remaining", "0".parse().unwrap());
        assert!(matches!(verdict(403, &h, 1, &p), Verdict::RetryAfter(_)));
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert!(
            matches!(verdict(429, &h, 1, &p), Verdict::RetryAfter(d) if d == Duration::from_secs(3))
        );
        assert!(matches!(
            verdict(502, &http::HeaderMap::new(), 1, &p),
            Verdict::RetryAfter(_)
        ));
        assert!(matches!(
            verdict(422, &http::HeaderMap::new(), 1, &p),
            Verdict::Fail
        ));
    }
}
