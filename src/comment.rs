//! The sticky PR comment: one set of comments per (repository, comment id),
//! updated in place on every run.
//!
//! Each part begins with the marker line and `<!-- part:N -->`; a run
//! updates the parts whose body changed, creates missing ones and deletes
//! parts it no longer needs, so a stale plan never remains.

use crate::github::{self, GitHub};

/// What a sync did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Synced {
    /// Comments created.
    pub created: usize,
    /// Comments updated.
    pub updated: usize,
    /// Comments deleted.
    pub deleted: usize,
    /// Comments left as they were (same body).
    pub unchanged: usize,
    /// Link to the first part.
    pub url: Option<String>,
}

/// The part number of a kdeploy comment body with `marker`, if it is one.
fn part_of(body: &str, marker: &str) -> Option<usize> {
    let mut lines = body.lines();
    if lines.next()? != marker {
        return None;
    }
    let second = lines.next().unwrap_or("");
    Some(
        second
            .strip_prefix("<!-- part:")
            .and_then(|r| r.strip_suffix(" -->"))
            .and_then(|n| n.parse().ok())
            .unwrap_or(1),
    )
}

/// This token's own comments on PR `number`: only they are kdeploy's
/// (anyone can write a marker into a comment).
async fn own_comments(gh: &GitHub, number: u64) -> Result<Vec<github::Comment>, github::Error> {
    let own = gh.own_login().await?;
    Ok(gh
        .list_comments(number)
        .await?
        .into_iter()
        .filter(|c| {
            c.user
                .as_ref()
                .is_some_and(|u| u.login.eq_ignore_ascii_case(&own))
        })
        .collect())
}

/// The bodies of this token's plan comments on PR `number`, whatever
/// their comment id (the plan job's workflow is not the deploy job's), in
/// (marker, part) order: the plans a reviewer saw.
///
/// # Errors
/// API errors.
pub async fn read_plans(gh: &GitHub, number: u64) -> Result<Vec<String>, github::Error> {
    let mut parts: Vec<(String, usize, u64, String)> = own_comments(gh, number)
        .await?
        .into_iter()
        .filter_map(|c| {
            let body = c.body.unwrap_or_default();
            let marker = body.lines().next()?.to_string();
            if !marker.starts_with("<!-- kdeploy-plan:") {
                return None;
            }
            let n = part_of(&body, &marker)?;
            Some((marker, n, c.id, body))
        })
        .collect();
    parts.sort();
    Ok(parts.into_iter().map(|(_, _, _, b)| b).collect())
}

/// Makes the comments on PR `number` carrying `marker`, written by this
/// token's identity, equal to `parts`.
///
/// # Errors
/// API errors (a 403 means the token cannot write comments).
pub async fn sync(
    gh: &GitHub,
    number: u64,
    marker: &str,
    parts: &[String],
) -> Result<Synced, github::Error> {
    // Only this token's own comments are kdeploy's: anyone can write the
    // marker into a comment, and such a comment is neither edited nor
    // deleted.
    let mut existing: Vec<(usize, github::Comment)> = own_comments(gh, number)
        .await?
        .into_iter()
        .filter_map(|c| part_of(c.body.as_deref().unwrap_or(""), marker).map(|n| (n, c)))
        .collect();
    existing.sort_by_key(|(n, c)| (*n, c.id));
    let mut synced = Synced::default();
    for (i, body) in parts.iter().enumerate() {
        let n = i + 1;
        let found = existing.iter().position(|(p, _)| *p == n);
        let comment = match found.map(|pos| existing.remove(pos)) {
            Some((_, c)) if c.body.as_deref() == Some(body.as_str()) => {
                synced.unchanged += 1;
                c
            }
            Some((_, c)) => {
                synced.updated += 1;
                gh.update_comment(c.id, body).await?
            }
            None => {
                synced.created += 1;
                gh.create_comment(number, body).await?
            }
        };
        if n == 1 {
            synced.url = comment.html_url.clone();
        }
    }
    // Parts beyond the new count, and duplicates of a part.
    for (_, c) in existing {
        gh.delete_comment(c.id).await?;
        synced.deleted += 1;
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_recognised_by_marker_and_number() {
        let m = "<!-- kdeploy-plan:ci -->";
        assert_eq!(
            part_of("<!-- kdeploy-plan:ci -->\n<!-- part:3 -->\nx", m),
            Some(3)
        );
        assert_eq!(part_of("<!-- kdeploy-plan:ci -->\n### old", m), Some(1));
        assert_eq!(
            part_of("<!-- kdeploy-plan:other -->\n<!-- part:1 -->", m),
            None
        );
        assert_eq!(part_of("LGTM <!-- kdeploy-plan:ci -->", m), None);
    }
}
