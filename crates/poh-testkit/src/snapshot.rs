//! Byte-for-byte snapshots of a store directory, to prove an operation changed nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::sim::{Node, SimFs};
use sha2::{Digest, Sha256};

/// Every path under a root (relative to it), with what it is: `file <len> <sha256>`,
/// `dir`, `symlink -> <target>` or `other`.
pub type Snapshot = BTreeMap<PathBuf, String>;

/// Snapshots the real directory `root`, never following links. SQLite's `-shm` file is
/// left out: it is the shared-memory index readers update on every read, not data.
/// The root itself is not listed; a root that does not exist snapshots as empty.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut out = Snapshot::new();
    if std::fs::symlink_metadata(root).is_ok() {
        walk(root, root, &mut out);
    }
    out
}

fn walk(root: &Path, path: &Path, out: &mut Snapshot) {
    let rel = path.strip_prefix(root).expect("under root").to_path_buf();
    let meta = std::fs::symlink_metadata(path).expect("stat");
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(path).expect("readlink");
        out.insert(rel, format!("symlink -> {}", target.display()));
    } else if ft.is_dir() {
        if !rel.as_os_str().is_empty() {
            out.insert(rel, "dir".into());
        }
        let mut names: Vec<_> = std::fs::read_dir(path)
            .expect("read_dir")
            .map(|e| e.expect("entry").path())
            .collect();
        names.sort();
        for p in names {
            if p.to_string_lossy().ends_with("-shm") {
                continue;
            }
            walk(root, &p, out);
        }
    } else if ft.is_file() {
        let data = std::fs::read(path).expect("read");
        out.insert(rel, describe(&data));
    } else {
        out.insert(rel, "other".into());
    }
}

fn describe(data: &[u8]) -> String {
    format!("file {} {}", data.len(), hex::encode(Sha256::digest(data)))
}

/// Snapshots what the simulated file system holds under `root`, in the same form.
pub fn sim_snapshot(sim: &SimFs, root: &Path) -> Snapshot {
    sim.tree(root)
        .into_iter()
        .map(|(p, node)| {
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let what = match node {
                Node::File(data) => describe(&data),
                Node::Dir => "dir".into(),
                Node::Symlink(t) => format!("symlink -> {}", t.display()),
            };
            (rel, what)
        })
        .collect()
}
