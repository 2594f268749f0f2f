//! The names a store manages, and refusing paths from outside that would land on them.
//!
//! A store owns, under its base directory: every `*.bin` name directly in it (payloads:
//! saves rename over them, `recover` removes those without a row), everything under `.tmp/`
//! (removed or renamed at every open), `.quarantine/` and (segments stores) `segments/`,
//! the lock file `.poh.lock` and the layout record `.poh-layout`;
//! and, wherever it is, its metadata database with SQLite's `-wal`, `-shm` and `-journal`
//! files beside it. A database path among the names under the base would be destroyed by
//! the store itself (deleted as a temp or an orphan, or replaced by a payload), so
//! [`check_db_path`] refuses it; every open calls it. An output path (`load --out`) onto
//! any managed name would overwrite the store, so front ends check it with
//! [`check_output_path`].
//!
//! Paths are compared after resolution: relative paths against the current directory,
//! then the longest existing prefix canonicalized (symbolic links, `..`), then the rest
//! normalized by name. A path whose last component is a symbolic link is compared both as
//! the link and as what it points to (even if that does not exist yet), since SQLite
//! opens, and creates, the link's target.

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use super::lock::LOCK_FILE;
use super::payload::{PAYLOAD_SUFFIX, QUARANTINE_DIR, TMP_DIR};
use crate::error::{Result, StorageError};

/// Files SQLite keeps beside a database, by the suffix added to its path.
pub const DB_SIDE_SUFFIXES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Most symbolic links followed when resolving one path (as the kernel's ELOOP limit).
const MAX_LINKS: usize = 40;

/// Refuses a database path that is a name the store at `base` manages: anything under
/// `<base>/.tmp/` or `<base>/.quarantine/`, the lock `<base>/.poh.lock`, a `*.bin` name
/// directly in `<base>`, or `<base>` itself.
pub fn check_db_path(base: &Path, db: &Path) -> Result<()> {
    let base_r = resolve(base);
    for form in forms(db) {
        if let Some(what) = under_base(&base_r, &form) {
            return Err(StorageError::BadPath {
                path: db.to_path_buf(),
                why: format!("the metadata database cannot be {what}"),
            });
        }
    }
    Ok(())
}

/// Refuses an output path that is a name the store at (`base`, `db`) manages: those of
/// [`check_db_path`], the database and its `-wal`, `-shm` and `-journal` files.
pub fn check_output_path(base: &Path, db: &Path, out: &Path) -> Result<()> {
    match store_path_reason(base, db, out) {
        Some(what) => Err(StorageError::BadPath {
            path: out.to_path_buf(),
            why: format!("the output file cannot be {what}"),
        }),
        None => Ok(()),
    }
}

/// True if `candidate` is a name the store at (`base`, `db`) manages (see
/// [`check_output_path`]).
pub fn is_store_path(base: &Path, db: &Path, candidate: &Path) -> bool {
    store_path_reason(base, db, candidate).is_some()
}

/// What `candidate` is to the store at (`base`, `db`), if it is one of its names.
fn store_path_reason(base: &Path, db: &Path, candidate: &Path) -> Option<String> {
    let base_r = resolve(base);
    let cand = forms(candidate);
    let db_forms = forms(db);
    for c in &cand {
        for d in &db_forms {
            if c == d {
                return Some(format!("the store's metadata database {}", d.display()));
            }
            for suffix in DB_SIDE_SUFFIXES {
                let side = with_suffix(d, suffix);
                if *c == side {
                    return Some(format!(
                        "the store's metadata database's {suffix} file {}",
                        side.display()
                    ));
                }
            }
        }
    }
    cand.iter().find_map(|c| under_base(&base_r, c))
}

/// What the resolved path `p` is among the names under the resolved base, if anything.
fn under_base(base: &Path, p: &Path) -> Option<String> {
    if p == base {
        return Some(format!("the store's base directory {}", base.display()));
    }
    let tmp = base.join(TMP_DIR);
    if p.starts_with(&tmp) {
        return Some(format!(
            "inside the store's temp directory {}, whose files the store removes",
            tmp.display()
        ));
    }
    let quarantine = base.join(QUARANTINE_DIR);
    if p.starts_with(&quarantine) {
        return Some(format!(
            "inside the store's quarantine directory {}, which holds payloads that failed verification",
            quarantine.display()
        ));
    }
    let lock = base.join(LOCK_FILE);
    if p == lock {
        return Some(format!("the store's lock file {}", lock.display()));
    }
    let segs = base.join(crate::segments::dir::SEGMENTS_DIR);
    if p.starts_with(&segs) {
        return Some(format!(
            "inside the store's segments directory {}, whose files hold a segments store's data",
            segs.display()
        ));
    }
    let layout = base.join(crate::layout::LAYOUT_FILE);
    if p == layout || p == with_suffix(&layout, ".tmp") {
        return Some(format!("the store's layout record {}", layout.display()));
    }
    let is_payload_name = p
        .file_name()
        .is_some_and(|n| n.as_encoded_bytes().ends_with(PAYLOAD_SUFFIX.as_bytes()));
    if is_payload_name && p.parent() == Some(base) {
        return Some(format!(
            "a payload file name (<tx_id>{PAYLOAD_SUFFIX} directly in the base directory {}), \
             which saves replace and recover removes",
            base.display()
        ));
    }
    None
}

/// `p` with `suffix` appended to its last component.
fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = OsString::from(p.as_os_str());
    s.push(suffix);
    PathBuf::from(s)
}

/// The resolved forms of `p`: as named (its directories resolved, its last component
/// kept), and, if that is a symbolic link, what it finally points to.
fn forms(p: &Path) -> Vec<PathBuf> {
    let named = resolve_parent(p);
    let target = follow(&named);
    if target == named {
        vec![named]
    } else {
        vec![named, target]
    }
}

/// `p` made absolute, with its directories resolved and its last component kept as it
/// is (not followed if it is a link). A path ending in `.`, `..` or `/` is resolved whole.
fn resolve_parent(p: &Path) -> PathBuf {
    match (p.parent(), p.components().next_back()) {
        (Some(parent), Some(Component::Normal(name))) => {
            let mut r = resolve(parent);
            r.push(name);
            r
        }
        _ => resolve(p),
    }
}

/// Follows `p` (already resolved by [`resolve_parent`]) while it is a symbolic link,
/// whether or not the final target exists.
fn follow(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    for _ in 0..MAX_LINKS {
        let Ok(target) = std::fs::read_link(&cur) else {
            break;
        };
        let next = match cur.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
        cur = resolve_parent(&next);
    }
    cur
}

/// `p` made absolute against the current directory, with its longest existing prefix
/// canonicalized (links and `..` resolved by the file system) and the rest normalized by
/// name.
fn resolve(p: &Path) -> PathBuf {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        match std::env::current_dir() {
            Ok(cwd) => cwd.join(p),
            // Without a current directory, relative paths are still compared with each
            // other consistently.
            Err(_) => p.to_path_buf(),
        }
    };
    let comps: Vec<Component<'_>> = abs.components().collect();
    for k in (1..=comps.len()).rev() {
        let prefix: PathBuf = comps[..k].iter().collect();
        if let Ok(mut out) = std::fs::canonicalize(&prefix) {
            push_normalized(&mut out, &comps[k..]);
            return out;
        }
    }
    let mut out = PathBuf::new();
    push_normalized(&mut out, &comps);
    out
}

/// Appends `comps` to `out` by name: `.` is skipped, `..` removes the last component.
fn push_normalized(out: &mut PathBuf, comps: &[Component<'_>]) {
    for c in comps {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
        base: PathBuf,
        db: PathBuf,
    }

    /// `<dir>/data` with `.tmp/` and a payload, the database `<dir>/data/poh.db`, a link
    /// `<dir>/link` -> `data`.
    fn fixture() -> Fixture {
        let dir = tempfile::TempDir::new().unwrap();
        let base = dir.path().join("data");
        std::fs::create_dir_all(base.join(TMP_DIR)).unwrap();
        std::fs::write(base.join("a.bin"), b"x").unwrap();
        std::fs::write(base.join("poh.db"), b"").unwrap();
        symlink("data", dir.path().join("link")).unwrap();
        let db = base.join("poh.db");
        Fixture { dir, base, db }
    }

    fn refused_db(f: &Fixture, db: &Path) -> String {
        match check_db_path(&f.base, db) {
            Err(StorageError::BadPath { path, why }) => {
                assert_eq!(path, db);
                why
            }
            other => panic!("{}: {other:?}", db.display()),
        }
    }

    #[test]
    fn databases_among_the_stores_names_are_refused_with_the_reason() {
        let f = fixture();
        let d = f.dir.path();
        let cases: Vec<(PathBuf, &str)> = vec![
            (f.base.join(".tmp/poh.db"), "temp directory"),
            (f.base.join(".tmp"), "temp directory"),
            (f.base.join(".tmp/new/deeper/poh.db"), "temp directory"),
            (f.base.join("missing/../.tmp/poh.db"), "temp directory"),
            (d.join("link/.tmp/poh.db"), "temp directory"),
            (d.join("link/./.tmp/../.tmp/x"), "temp directory"),
            (f.base.join(".quarantine/poh.db"), "quarantine directory"),
            (f.base.join(".poh.lock"), "lock file"),
            (f.base.join("meta.bin"), "payload file name"),
            (f.base.join("a.bin"), "payload file name"),
            (d.join("link/meta.bin"), "payload file name"),
            (f.base.clone(), "base directory"),
            (d.join("link"), "base directory"),
            (d.join("data/."), "base directory"),
            (f.base.join(".tmp/.."), "base directory"),
        ];
        for (db, word) in &cases {
            let why = refused_db(&f, db);
            assert!(why.contains(word), "{}: {why}", db.display());
            assert!(why.starts_with("the metadata database cannot be"), "{why}");
        }
        // The message names the path given and the reason.
        let e = check_db_path(&f.base, &f.base.join("meta.bin")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("meta.bin") && msg.contains("payload file name"),
            "{msg}"
        );
    }

    #[test]
    fn a_database_link_is_judged_by_its_target_too() {
        let f = fixture();
        let d = f.dir.path();
        // Dangling: SQLite would create the target, a payload name.
        symlink("data/linked.bin", d.join("db-link")).unwrap();
        assert!(refused_db(&f, &d.join("db-link")).contains("payload file name"));
        // A chain of links ending under .tmp/.
        symlink("data/.tmp/x.db", d.join("hop2")).unwrap();
        symlink("hop2", d.join("hop1")).unwrap();
        assert!(refused_db(&f, &d.join("hop1")).contains("temp directory"));
        // A link loop is not followed forever, and names nothing of the store.
        symlink("loop-b", d.join("loop-a")).unwrap();
        symlink("loop-a", d.join("loop-b")).unwrap();
        check_db_path(&f.base, &d.join("loop-a")).unwrap();
    }

    #[test]
    fn relative_paths_resolve_against_the_current_directory() {
        let cwd = std::env::current_dir().unwrap();
        let base = Path::new("rel-data");
        assert_eq!(resolve(base), cwd.join("rel-data"));
        assert!(check_db_path(base, Path::new("rel-data/.tmp/poh.db")).is_err());
        assert!(check_db_path(base, Path::new("./rel-data/x/../y.bin")).is_err());
        assert!(check_db_path(&cwd.join("rel-data"), Path::new("rel-data/.poh.lock")).is_err());
        check_db_path(base, Path::new("rel-data/poh.db")).unwrap();
        check_db_path(base, Path::new("poh.db")).unwrap();
    }

    #[test]
    fn other_names_are_fine_for_a_database() {
        let f = fixture();
        let d = f.dir.path();
        for db in [
            f.base.join("poh.db"),
            f.base.join("other.db"),
            f.base.join("bin"),
            f.base.join("x.bin.db"),
            f.base.join(".tmpdb"),
            f.base.join("sub/x.bin"),
            d.join("poh.db"),
            d.join("x.bin"),
            d.join("link/poh.db"),
        ] {
            check_db_path(&f.base, &db).unwrap();
        }
    }

    #[test]
    fn outputs_onto_the_database_and_its_side_files_are_refused() {
        let f = fixture();
        let d = f.dir.path();
        for (out, word) in [
            (f.db.clone(), "metadata database"),
            (d.join("link/poh.db"), "metadata database"),
            (f.base.join("x/../poh.db"), "metadata database"),
            (f.base.join("poh.db-wal"), "-wal file"),
            (f.base.join("poh.db-shm"), "-shm file"),
            (f.base.join("poh.db-journal"), "-journal file"),
            (f.base.join("a.bin"), "payload file name"),
            (f.base.join(".tmp/out"), "temp directory"),
            (f.base.join(".poh.lock"), "lock file"),
            (f.base.clone(), "base directory"),
        ] {
            assert!(is_store_path(&f.base, &f.db, &out), "{}", out.display());
            let why = match check_output_path(&f.base, &f.db, &out) {
                Err(StorageError::BadPath { why, .. }) => why,
                other => panic!("{}: {other:?}", out.display()),
            };
            assert!(
                why.starts_with("the output file cannot be") && why.contains(word),
                "{}: {why}",
                out.display()
            );
        }
        // A link onto the database, as an output, is refused too.
        symlink("data/poh.db", d.join("db-alias")).unwrap();
        assert!(is_store_path(&f.base, &f.db, &d.join("db-alias")));
        for out in [
            d.join("out.bin"),
            f.base.join("notes.txt"),
            f.base.join("poh.db-other"),
            d.join("poh.db"),
        ] {
            assert!(!is_store_path(&f.base, &f.db, &out), "{}", out.display());
            check_output_path(&f.base, &f.db, &out).unwrap();
        }
        // A database elsewhere: its files are the store's, the default name is not.
        let elsewhere = d.join("meta.db");
        assert!(is_store_path(&f.base, &elsewhere, &d.join("meta.db-wal")));
        assert!(!is_store_path(&f.base, &elsewhere, &f.base.join("poh.db")));
    }
}
