//! Loose objects read with one `read(2)` each.
//!
//! gix maps every loose object file into memory to read it, and a blob
//! twice (its header for the size limit, then its body). Unmapping a file
//! makes the kernel flush the TLB of every core the process runs on; with
//! the render's threads reading in parallel, that was most of the time a
//! render spent on git objects right after `git commit`, when every object
//! is loose. A small compressed file read into a buffer costs one copy.
//!
//! Only the plain case is handled here: a well-formed object of the kind
//! asked for, in the repository's own `objects/` directory. Anything else
//! (a packed object, an alternate, a corrupt or unreadable file, another
//! kind) is `None`, and the caller asks gix, whose verdict and error stand.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::Kind;

/// Inflated header bytes read before the body: git's `<kind> <size>\0`
/// (gix reads at most as many).
const HEADER_MAX: usize = 64;

/// What a loose object read found.
pub(super) enum Loose {
    /// The object's content.
    Data(Vec<u8>),
    /// The object is larger than the limit: its size from the header; the
    /// body was not inflated.
    TooLarge(u64),
}

/// A repository's loose object directory and which of its 256 fan-out
/// directories exist, listed once: a packed repository has none, and its
/// reads then try no file.
#[derive(Debug)]
pub(super) struct Dirs {
    objects: PathBuf,
    /// One bit per first byte of an object id.
    present: [u64; 4],
}

impl Dirs {
    /// The loose object directories of `repo`.
    pub(super) fn of(repo: &gix::Repository) -> Dirs {
        let objects = repo.objects.store_ref().path().to_path_buf();
        let mut present = [0u64; 4];
        for entry in std::fs::read_dir(&objects).into_iter().flatten().flatten() {
            let name = entry.file_name();
            if let Some(byte) = name
                .to_str()
                .filter(|n| n.len() == 2)
                .and_then(|n| u8::from_str_radix(n, 16).ok())
            {
                present[usize::from(byte / 64)] |= 1 << (byte % 64);
            }
        }
        Dirs { objects, present }
    }

    /// The loose object `id` of `kind`, when it is there and well formed
    /// and no larger than `limit` (else its size).
    pub(super) fn read(&self, id: ObjectId, kind: Kind, limit: u64) -> Option<Loose> {
        let first = *id.as_bytes().first()?;
        if self.present[usize::from(first / 64)] & (1 << (first % 64)) == 0 {
            return None;
        }
        read(&self.objects, id, kind, limit)
    }
}

/// The loose object `id` of `kind` from `objects`, when it is there and
/// well formed and no larger than `limit` (else its size).
fn read(objects: &Path, id: ObjectId, kind: Kind, limit: u64) -> Option<Loose> {
    let hex = id.to_hex().to_string();
    let path = objects.join(&hex[..2]).join(&hex[2..]);
    let file = std::fs::File::open(path).ok()?;
    // Deflate's output is never much larger than its input (a stored block
    // adds 5 bytes per 64 KiB), so a larger file holds an object over the
    // limit: gix says so from the header without reading it all.
    let cap = limit.saturating_add(limit / 64).saturating_add(4096);
    let mut compressed = Vec::new();
    (&file)
        .take(cap.saturating_add(1))
        .read_to_end(&mut compressed)
        .ok()?;
    if compressed.len() as u64 > cap {
        return None;
    }
    let mut header = [0u8; HEADER_MAX];
    let mut inflate = gix::zlib::Inflate::default();
    let (status, consumed_in, consumed_out) = inflate.prefix(&compressed, &mut header).ok()?;
    let (found, size, header_size) =
        gix::objs::decode::loose_header(header.get(..consumed_out)?).ok()?;
    if found != kind {
        return None;
    }
    if size > limit {
        return Some(Loose::TooLarge(size));
    }
    let size = usize::try_from(size).ok()?;
    let inflated = consumed_out.checked_sub(header_size)?;
    let ended = status == gix::zlib::Status::StreamEnd;
    if inflated > size || (ended && inflated != size) {
        return None;
    }
    let mut out = Vec::with_capacity(size);
    if ended {
        out.extend_from_slice(&header[header_size..consumed_out]);
    } else {
        let n = inflate
            .rest(
                &compressed[consumed_in..],
                &header[..consumed_out],
                header_size,
                &mut out,
                size,
            )
            .ok()?;
        if n != size {
            return None;
        }
    }
    Some(Loose::Data(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository with one loose blob of `content`, by git itself.
    fn repo_with(content: &[u8]) -> Option<(tempfile::TempDir, ObjectId)> {
        let dir = tempfile::tempdir().ok()?;
        let run = |args: &[&str], input: Option<&[u8]>| -> Option<String> {
            use std::io::Write as _;
            let mut child = std::process::Command::new("git")
                .args(args)
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .ok()?;
            child
                .stdin
                .take()?
                .write_all(input.unwrap_or_default())
                .ok()?;
            let out = child.wait_with_output().ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        run(&["init", "-q"], None)?;
        let id = run(&["hash-object", "-w", "--stdin"], Some(content))?;
        Some((dir, ObjectId::from_hex(id.as_bytes()).ok()?))
    }

    #[test]
    fn reads_what_gix_reads_and_leaves_the_rest_to_it() {
        let Some((dir, id)) = repo_with(&b"replicas: 3\n".repeat(500)) else {
            eprintln!("skipped: git not found");
            return;
        };
        let repo = gix::open(dir.path()).expect("open");
        let dirs = Dirs::of(&repo);
        let hex = id.to_hex().to_string();
        let byte = u8::from_str_radix(&hex[..2], 16).expect("hex");
        assert_eq!(
            dirs.present.iter().map(|w| w.count_ones()).sum::<u32>(),
            1,
            "only the blob's fan-out directory"
        );
        assert_ne!(dirs.present[usize::from(byte / 64)] & (1 << (byte % 64)), 0);
        let objects = dirs.objects.clone();
        let from_gix = repo.find_blob(id).expect("blob").data.clone();
        match read(&objects, id, Kind::Blob, 1 << 20) {
            Some(Loose::Data(data)) => assert_eq!(data, from_gix),
            _ => panic!("a loose blob is read"),
        }
        // Over the limit: the size from the header.
        assert!(matches!(
            read(&objects, id, Kind::Blob, 10),
            Some(Loose::TooLarge(6000))
        ));
        // Another kind, a missing object, a corrupt file: gix decides.
        assert!(read(&objects, id, Kind::Tree, 1 << 20).is_none());
        assert!(read(&objects, ObjectId::null(id.kind()), Kind::Blob, 1 << 20).is_none());
        let path = objects.join(&hex[..2]).join(&hex[2..]);
        let mut bytes = std::fs::read(&path).expect("object");
        bytes.truncate(bytes.len() / 2);
        // Git writes objects read-only; the directory takes a new file.
        std::fs::remove_file(&path).expect("remove");
        std::fs::write(&path, &bytes).expect("truncated copy");
        assert!(read(&objects, id, Kind::Blob, 1 << 20).is_none());
    }
}
