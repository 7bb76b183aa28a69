//! Issues: the one issue per environment that `mode: drift` keeps open
//! while the environment drifts.

use serde::Deserialize;
use serde_json::json;

use super::{Error, GitHub, Method, header, next_link};

/// An issue (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Issue {
    /// Number.
    pub number: u64,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// Link for humans.
    #[serde(default)]
    pub html_url: String,
    /// Present on pull requests, which the issues API lists too.
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
}

impl GitHub {
    /// Every open issue (pull requests left out), following `Link`.
    ///
    /// # Errors
    /// API errors.
    pub async fn open_issues(&self) -> Result<Vec<Issue>, Error> {
        let mut url = format!("/repos/{}/issues?state=open&per_page=100", self.repo);
        let mut out = Vec::new();
        for _ in 0..50 {
            let (headers, value) = self.send(Method::Get, &url, None).await?;
            let page: Vec<Issue> = serde_json::from_value(value).map_err(|e| Error::Transport {
                method: "GET",
                path: url.clone(),
                detail: format!("unexpected issue list: {e}"),
            })?;
            out.extend(page.into_iter().filter(|i| i.pull_request.is_none()));
            match header(&headers, "link").and_then(next_link) {
                Some(next) => url = next,
                None => break,
            }
        }
        Ok(out)
    }

    /// Opens an issue.
    ///
    /// # Errors
    /// API errors (403 without `issues: write`).
    pub async fn create_issue(&self, title: &str, body: &str) -> Result<Issue, Error> {
        let path = format!("/repos/{}/issues", self.repo);
        let (_, v) = self
            .send(
                Method::Post,
                &path,
                Some(&json!({"title": title, "body": body})),
            )
            .await?;
        parse(v, &path)
    }

    /// Replaces an issue's body.
    ///
    /// # Errors
    /// API errors.
    pub async fn update_issue(&self, number: u64, body: &str) -> Result<Issue, Error> {
        let path = format!("/repos/{}/issues/{number}", self.repo);
        let (_, v) = self
            .send(Method::Patch, &path, Some(&json!({"body": body})))
            .await?;
        parse(v, &path)
    }

    /// Closes an issue as completed.
    ///
    /// # Errors
    /// API errors.
    pub async fn close_issue(&self, number: u64) -> Result<Issue, Error> {
        let path = format!("/repos/{}/issues/{number}", self.repo);
        let (_, v) = self
            .send(
                Method::Patch,
                &path,
                Some(&json!({"state": "closed", "state_reason": "completed"})),
            )
            .await?;
        parse(v, &path)
    }
}

fn parse(v: serde_json::Value, path: &str) -> Result<Issue, Error> {
    serde_json::from_value(v).map_err(|e| Error::Transport {
        method: "POST",
        path: path.to_string(),
        detail: format!("unexpected issue: {e}"),
    })
}
