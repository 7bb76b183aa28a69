//! Git data and pull request endpoints: commits made through the API (so a
//! container with a read-only checkout and only a token can publish a
//! change, and GitHub signs the commit), branches, and pull requests.

use serde::Deserialize;
use serde_json::{Value, json};

use super::{Error, GitHub, Method};

/// A commit as `GET /git/commits/{sha}` describes it (the fields used).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    /// Commit id.
    pub sha: String,
    /// Its tree.
    pub tree: String,
    /// Parent ids.
    pub parents: Vec<String>,
}

/// A pull request (the fields used).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PullRequest {
    /// Number.
    pub number: u64,
    /// Link for humans.
    #[serde(default)]
    pub html_url: String,
    /// Title.
    #[serde(default)]
    pub title: String,
    /// Markdown body.
    #[serde(default)]
    pub body: Option<String>,
    /// `open` or `closed`.
    #[serde(default)]
    pub state: String,
    /// When it was closed (merged or not), RFC 3339.
    #[serde(default)]
    pub closed_at: Option<String>,
    /// When it was merged; `None` when it was not.
    #[serde(default)]
    pub merged_at: Option<String>,
    /// The label names.
    #[serde(default)]
    pub labels: Vec<Label>,
}

/// A label of an issue or pull request.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Label {
    /// Its name.
    pub name: String,
}

fn unexpected(method: &'static str, path: &str, what: &str) -> Error {
    Error::Transport {
        method,
        path: path.to_string(),
        detail: format!("the answer has no {what}"),
    }
}

fn sha_at(v: &Value, pointer: &str, method: &'static str, path: &str) -> Result<String, Error> {
    v.pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| unexpected(method, path, pointer))
}

/// `None` for a 404, the value otherwise.
fn found<T>(r: Result<T, Error>) -> Result<Option<T>, Error> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

impl GitHub {
    /// A commit, or `None` when GitHub does not have it (never pushed).
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn commit(&self, sha: &str) -> Result<Option<Commit>, Error> {
        let path = format!("/repos/{}/git/commits/{sha}", self.repo);
        let Some((_, v)) = found(self.send(Method::Get, &path, None).await)? else {
            return Ok(None);
        };
        Ok(Some(Commit {
            sha: sha_at(&v, "/sha", "GET", &path)?,
            tree: sha_at(&v, "/tree/sha", "GET", &path)?,
            parents: v["parents"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter_map(|p| p["sha"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }))
    }

    /// A tree: `base` with `files` (path from the repository root, text)
    /// written over it. Returns the tree's id.
    ///
    /// # Errors
    /// API errors (403 without `contents: write`).
    pub async fn create_tree(
        &self,
        base: &str,
        files: &[(String, String)],
    ) -> Result<String, Error> {
        let path = format!("/repos/{}/git/trees", self.repo);
        let entries: Vec<Value> = files
            .iter()
            .map(|(file, content)| {
                json!({"path": file, "mode": "100644", "type": "blob", "content": content})
            })
            .collect();
        let body = json!({"base_tree": base, "tree": entries});
        let (_, v) = self.send(Method::Post, &path, Some(&body)).await?;
        sha_at(&v, "/sha", "POST", &path)
    }

    /// A commit of `tree` on `parents`; GitHub sets the author from the
    /// token (github-actions[bot] for `GITHUB_TOKEN`) and signs it.
    ///
    /// # Errors
    /// API errors.
    pub async fn create_commit(
        &self,
        message: &str,
        tree: &str,
        parents: &[String],
    ) -> Result<String, Error> {
        let path = format!("/repos/{}/git/commits", self.repo);
        let body = json!({"message": message, "tree": tree, "parents": parents});
        let (_, v) = self.send(Method::Post, &path, Some(&body)).await?;
        sha_at(&v, "/sha", "POST", &path)
    }

    /// The commit a branch points at, or `None` when there is no such branch.
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn branch(&self, name: &str) -> Result<Option<String>, Error> {
        let path = format!("/repos/{}/git/ref/heads/{name}", self.repo);
        let Some((_, v)) = found(self.send(Method::Get, &path, None).await)? else {
            return Ok(None);
        };
        // The singular endpoint matches exactly; an array would be a prefix
        // match from the plural one, which this never calls.
        sha_at(&v, "/object/sha", "GET", &path).map(Some)
    }

    /// Creates a branch at `sha`.
    ///
    /// # Errors
    /// API errors (422 when it exists).
    pub async fn create_branch(&self, name: &str, sha: &str) -> Result<(), Error> {
        let path = format!("/repos/{}/git/refs", self.repo);
        let body = json!({"ref": format!("refs/heads/{name}"), "sha": sha});
        self.send(Method::Post, &path, Some(&body))
            .await
            .map(|_| ())
    }

    /// Moves a branch to `sha`; without `force` only forwards (GitHub
    /// answers 422 "Update is not a fast forward" otherwise).
    ///
    /// # Errors
    /// API errors.
    pub async fn update_branch(&self, name: &str, sha: &str, force: bool) -> Result<(), Error> {
        let path = format!("/repos/{}/git/refs/heads/{name}", self.repo);
        let body = json!({"sha": sha, "force": force});
        self.send(Method::Patch, &path, Some(&body))
            .await
            .map(|_| ())
    }

    /// Deletes a branch.
    ///
    /// # Errors
    /// API errors.
    pub async fn delete_branch(&self, name: &str) -> Result<(), Error> {
        let path = format!("/repos/{}/git/refs/heads/{name}", self.repo);
        self.send(Method::Delete, &path, None).await.map(|_| ())
    }

    /// Pull request `number`, or `None` when there is none.
    ///
    /// # Errors
    /// API errors other than 404.
    pub async fn pull(&self, number: u64) -> Result<Option<PullRequest>, Error> {
        let path = format!("/repos/{}/pulls/{number}", self.repo);
        let Some((_, v)) = found(self.send(Method::Get, &path, None).await)? else {
            return Ok(None);
        };
        serde_json::from_value(v)
            .map(Some)
            .map_err(|e| Error::Transport {
                method: "GET",
                path,
                detail: format!("unexpected pull request: {e}"),
            })
    }

    /// The pull requests a commit came from: on the default branch, the
    /// merged one that introduced it (merge, squash or rebase); elsewhere,
    /// the open ones whose branch has it (`GET
    /// /repos/{repo}/commits/{sha}/pulls`).
    ///
    /// # Errors
    /// API errors (404 for a commit GitHub does not have).
    pub async fn pulls_for_commit(&self, sha: &str) -> Result<Vec<PullRequest>, Error> {
        let path = format!("/repos/{}/commits/{sha}/pulls?per_page=100", self.repo);
        let (_, v) = self.send(Method::Get, &path, None).await?;
        serde_json::from_value(v).map_err(|e| Error::Transport {
            method: "GET",
            path,
            detail: format!("unexpected pull request list: {e}"),
        })
    }

    /// The open pull request from `head` (a branch of this repository)
    /// into `base`, if there is one.
    ///
    /// # Errors
    /// API errors.
    pub async fn open_pull(&self, head: &str, base: &str) -> Result<Option<PullRequest>, Error> {
        let owner = self.repo.split('/').next().unwrap_or_default();
        let path = format!(
            "/repos/{}/pulls?state=open&head={owner}:{head}&base={base}&per_page=100",
            self.repo
        );
        let (_, v) = self.send(Method::Get, &path, None).await?;
        let pulls: Vec<PullRequest> = serde_json::from_value(v).map_err(|e| Error::Transport {
            method: "GET",
            path: path.clone(),
            detail: format!("unexpected pull request list: {e}"),
        })?;
        Ok(pulls.into_iter().next())
    }

    /// Opens a pull request from `head` into `base`.
    ///
    /// # Errors
    /// API errors (422 when one is open already or nothing differs; 403
    /// when the repository does not let Actions open pull requests).
    pub async fn create_pull(
        &self,
        title: &str,
        head: &str,
        base: &str,
        body: &str,
    ) -> Result<PullRequest, Error> {
        let path = format!("/repos/{}/pulls", self.repo);
        let request = json!({"title": title, "head": head, "base": base, "body": body});
        let (_, v) = self.send(Method::Post, &path, Some(&request)).await?;
        serde_json::from_value(v).map_err(|_| unexpected("POST", &path, "pull request"))
    }

    /// Replaces a pull request's title and body.
    ///
    /// # Errors
    /// API errors.
    pub async fn update_pull(
        &self,
        number: u64,
        title: &str,
        body: &str,
    ) -> Result<PullRequest, Error> {
        let path = format!("/repos/{}/pulls/{number}", self.repo);
        let request = json!({"title": title, "body": body});
        let (_, v) = self.send(Method::Patch, &path, Some(&request)).await?;
        serde_json::from_value(v).map_err(|_| unexpected("PATCH", &path, "pull request"))
    }
}
