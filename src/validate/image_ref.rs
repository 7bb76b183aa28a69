//! Image references, checked as the container runtime parses them (the
//! distribution reference grammar, through `oci-spec`).
//!
//! `oci-spec` matches one large regex whose tag part is Unicode `\w{0,127}`:
//! compiling it took about 60 ms of the first release's thread (every other
//! thread waits on it), and matching a backtracker per container. Nearly
//! every image is plainly valid: lowercase path components, an optional
//! registry host and port, an ASCII tag, a sha256 digest. Those are accepted
//! here by a scan that accepts a strict subset of what the regex accepts;
//! anything else goes to `oci-spec`, whose verdict and message stand.

/// Ok when `image` is a reference; else why not, with an example.
pub fn check(image: &str) -> Result<(), String> {
    if image.is_empty() {
        return Err("the image is empty".into());
    }
    if plainly_valid(image) {
        return Ok(());
    }
    image
        .parse::<oci_spec::distribution::Reference>()
        .map(|_| ())
        .map_err(|e| format!("`{image}` is not an image reference ({e}); it should look like registry.example.com/team/app:1.2.3"))
}

/// True only for references `oci-spec` certainly accepts; false says
/// nothing (the caller asks `oci-spec`).
fn plainly_valid(image: &str) -> bool {
    let (rest, digest) = match image.split_once('@') {
        Some((rest, digest)) => (rest, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        // sha256 only: the other algorithms have their own lengths.
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return false;
        };
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return false;
        }
    }
    // A tag follows the last `:` after the last `/` (a `:` before a `/` is
    // the registry's port).
    let (name, tag) = match rest.rfind(':') {
        Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
        _ => (rest, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return false;
    }
    // The repository may gain `library/` (Docker Hub's official images);
    // its limit is 255 characters.
    if name.is_empty() || name.len() + "library/".len() > 255 {
        return false;
    }
    let mut parts = name.split('/');
    let first = parts.next().unwrap_or_default();
    let rest_are_paths = parts.clone().all(is_path_component);
    let has_more = parts.next().is_some();
    // The first part is a path component, or a registry when more follow.
    rest_are_paths && (is_path_component(first) || (has_more && is_domain(first)))
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`: the ASCII part of the grammar's tag.
fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: &u8| c.is_ascii_alphanumeric() || *c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(&b[0])
        && b[1..].iter().all(|c| word(c) || matches!(c, b'.' | b'-'))
}

/// Lowercase alphanumeric runs joined by `.`, `_`, `__` or any run of `-`.
fn is_path_component(part: &str) -> bool {
    let b = part.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let (Some(&head), Some(&tail)) = (b.first(), b.last()) else {
        return false;
    };
    if !alnum(head) || !alnum(tail) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let separator = &b[start..i];
        let allowed =
            matches!(separator, b"." | b"_" | b"__") || separator.iter().all(|&c| c == b'-');
        if !allowed {
            return false;
        }
    }
    true
}

/// Dot-separated host labels (letters, digits, inner `-`), then an optional
/// `:port`.
fn is_domain(part: &str) -> bool {
    let (host, port) = match part.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (part, None),
    };
    if let Some(port) = port
        && (port.is_empty() || !port.bytes().all(|c| c.is_ascii_digit()))
    {
        return false;
    }
    host.split('.').all(|label| {
        let b = label.as_bytes();
        let (Some(&head), Some(&tail)) = (b.first(), b.last()) else {
            return false;
        };
        head.is_ascii_alphanumeric()
            && tail.is_ascii_alphanumeric()
            && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parses(image: &str) -> bool {
        image.parse::<oci_spec::distribution::Reference>().is_ok()
    }

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn common_images_take_the_scan() {
        let pinned = format!("ghcr.io/org/app:1.2.3@{DIGEST}");
        let digest_only = format!("localhost:5000/a/b@{DIGEST}");
        for image in [
            "nginx",
            "nginx:1.27-alpine",
            "ghcr.io/example/api:1.4.2",
            "registry.example.com:5000/team/app_name/x--y:v1.0.0_rc.1",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com/svc:sha-abc123",
            "Registry.Example.com/team/app:Latest",
            pinned.as_str(),
            digest_only.as_str(),
        ] {
            assert!(plainly_valid(image), "{image}");
            assert!(parses(image), "{image}");
            assert_eq!(check(image), Ok(()));
        }
    }

    #[test]
    fn the_rest_goes_to_oci_spec() {
        for image in [
            "ghcr.io/x:1.0:{a}\"x",
            "Upper/Case",
            "a b",
            "app:",
            "app:.tag",
            "a..b",
            "a___b",
            "-a",
            "ghcr.io/app@sha256:abc",
            "ghcr.io/app@sha512:0123",
            "host:/app",
        ] {
            assert!(!plainly_valid(image), "{image}");
            assert!(check(image).is_err(), "{image}");
        }
        // Outside the scan, yet valid: a Unicode tag (the grammar's \w).
        assert!(!plainly_valid("app:é"));
        assert_eq!(check("app:é"), Ok(()));
        assert_eq!(check("").unwrap_err(), "the image is empty");
    }

    /// Strings from the characters the grammar turns on, so generated
    /// input reaches hosts, ports, separators, tags and digests.
    fn imageish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("a"),
            Just("z9"),
            Just("A"),
            Just("0"),
            Just("."),
            Just("_"),
            Just("__"),
            Just("-"),
            Just("--"),
            Just(":"),
            Just("/"),
            Just("@"),
            Just("5000"),
            Just("localhost"),
            Just("ghcr.io"),
            Just("é"),
            Just(" "),
            Just("sha256:"),
            Just("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"),
        ];
        prop::collection::vec(piece, 1..14).prop_map(|p| p.concat())
    }

    proptest! {
        /// The scan never accepts what oci-spec refuses.
        #[test]
        fn the_scan_accepts_only_what_oci_spec_accepts(image in imageish()) {
            if plainly_valid(&image) {
                prop_assert!(parses(&image), "{image}");
            }
        }

        /// Long names and tags: the scan keeps to the length limits.
        #[test]
        fn lengths_stay_within_the_grammar(name in 1usize..300, tag in 1usize..140) {
            let image = format!("{}:{}", "a".repeat(name), "t".repeat(tag));
            if plainly_valid(&image) {
                prop_assert!(parses(&image), "{name} {tag}");
            }
        }
    }
}
