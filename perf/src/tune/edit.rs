//! Writing the advisor's settings into the user's TOML files with `toml_edit`, so that
//! comments, key order, formatting and every key it does not set survive; and the
//! staged copy of a job directory the settings are written into first.
//!
//! A value the file already has is replaced in place (its comments kept, the trailing
//! one too); the key gets a `# rill-perf tune: …` line right above it saying where the
//! number came from (`was <old>; …` for a replaced value; a later run replaces that line
//! rather than adding another). A missing table is added at the end. Nothing here
//! decides a value or runs a job.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use toml_edit::{DocumentMut, Item, Table, Value};

/// The prefix of the comment line the advisor puts above a key it added.
pub const NOTE: &str = "# rill-perf tune:";

/// Sets `table.key = value` (or `key = value` at the root) in the TOML `text`, with
/// `note` as the `# rill-perf tune:` comment above the key (`was <old>; note` when the
/// key was there: its own comments stay, a note of an earlier run is replaced). Returns
/// the new text and the old value as written, if there was one. `file` names the file
/// in errors.
pub fn set_int(
    file: &Path,
    text: &str,
    table: Option<&str>,
    key: &str,
    value: i64,
    note: &str,
) -> Result<(String, Option<String>)> {
    let mut doc: DocumentMut = text.parse().map_err(|e: toml_edit::TomlError| {
        anyhow!("{}: {}", file.display(), e.to_string().trim_end())
    })?;
    let note_line = format!("{NOTE} {note}\n");
    // A file of comments only keeps them in the document's trailing text, which prints
    // after every key: move them above the first key so they stay at the top.
    let root_empty = doc.as_table().is_empty();
    let container: &mut dyn toml_edit::TableLike = match table {
        None => doc.as_table_mut(),
        Some(name) => {
            if !doc.as_table().contains_key(name) {
                let mut t = Table::new();
                t.decor_mut()
                    .set_prefix(format!("\n{NOTE} [{name}] added for {key}\n"));
                doc.as_table_mut().insert(name, Item::Table(t));
            }
            doc.as_table_mut()
                .get_mut(name)
                .and_then(Item::as_table_like_mut)
                .ok_or_else(|| {
                    anyhow!(
                        "{}: `{name}` is not a table, so {name}.{key} cannot be set",
                        file.display()
                    )
                })?
        }
    };
    let old = match container.get_mut(key) {
        Some(item) => {
            let Some(v) = item.as_value_mut() else {
                bail!(
                    "{}: `{}` is a table, expected a number",
                    file.display(),
                    dotted(table, key)
                );
            };
            let old = v.clone().decorated("", "").to_string();
            let decor = v.decor().clone();
            *v = Value::from(value);
            *v.decor_mut() = decor;
            if let Some(mut k) = container.key_mut(key) {
                let prefix = k
                    .leaf_decor()
                    .prefix()
                    .and_then(|p| p.as_str())
                    .map(str::to_string);
                let prefix = prefix.unwrap_or_default();
                let line = format!("{NOTE} was {old}; {note}\n");
                let kept: String = if prefix.contains(NOTE) {
                    // A note of an earlier run: replaced, not piled up.
                    prefix
                        .split_inclusive('\n')
                        .map(|l| {
                            let body = l.trim_start();
                            if body.starts_with(NOTE) {
                                format!("{}{line}", &l[..l.len() - body.len()])
                            } else {
                                l.to_string()
                            }
                        })
                        .collect()
                } else {
                    // The note goes right above the key, after the user's own lines.
                    let (head, indent) = match prefix.rfind('\n') {
                        Some(i) => prefix.split_at(i + 1),
                        None => ("", prefix.as_str()),
                    };
                    format!("{head}{indent}{line}{indent}")
                };
                k.leaf_decor_mut().set_prefix(kept);
            }
            Some(old)
        }
        None => {
            container.insert(key, Item::Value(Value::from(value)));
            if let Some(mut k) = container.key_mut(key) {
                k.leaf_decor_mut().set_prefix(note_line.clone());
            }
            None
        }
    };
    if table.is_none() && root_empty && old.is_none() {
        let trailing = doc.trailing().as_str().unwrap_or("").to_string();
        if !trailing.trim().is_empty() {
            let mut head = trailing;
            if !head.ends_with('\n') {
                head.push('\n');
            }
            doc.set_trailing("");
            if let Some(mut k) = doc.as_table_mut().key_mut(key) {
                k.leaf_decor_mut().set_prefix(format!("{head}{note_line}"));
            }
        }
    }
    Ok((doc.to_string(), old))
}

fn dotted(table: Option<&str>, key: &str) -> String {
    match table {
        Some(t) => format!("{t}.{key}"),
        None => key.to_string(),
    }
}

/// A copy of a job directory's configuration files (job.toml, load.toml, core.toml,
/// cores/*.toml) in a temporary directory of the same name: the advisor writes there,
/// the engine loads it, and only then are the changed files copied back.
pub struct Staging {
    _tmp: tempfile::TempDir,
    /// The staged job directory.
    pub dir: PathBuf,
    /// The user's directory.
    pub original: PathBuf,
}

/// One setting applied to a staged file.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Applied {
    /// The file, relative to the job directory (`job.toml`, `cores/0.toml`).
    pub file: PathBuf,
    /// `table.key` or `key`.
    pub key: String,
    /// What the file had (none: the key was absent and is added).
    pub old: Option<String>,
    /// What it has now.
    pub new: i64,
}

impl Staging {
    /// Copies the configuration files of `original`.
    pub fn copy(original: &Path) -> Result<Self> {
        let name = original
            .canonicalize()
            .with_context(|| format!("{}: cannot resolve the directory", original.display()))?
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_else(|| "job".into());
        let tmp = tempfile::Builder::new()
            .prefix("rill-perf-tune-")
            .tempdir()
            .context("create a staging directory")?;
        let dir = tmp.path().join(name);
        std::fs::create_dir_all(&dir)?;
        for f in ["job.toml", "load.toml", "core.toml"] {
            let from = original.join(f);
            if from.is_file() {
                std::fs::copy(&from, dir.join(f))
                    .with_context(|| format!("copy {}", from.display()))?;
            }
        }
        let cores = original.join("cores");
        if cores.is_dir() {
            std::fs::create_dir_all(dir.join("cores"))?;
            for e in
                std::fs::read_dir(&cores).with_context(|| format!("read {}", cores.display()))?
            {
                let path = e?.path();
                if path.extension().and_then(|x| x.to_str()) == Some("toml") {
                    let name = path.file_name().expect("a file has a name");
                    std::fs::copy(&path, dir.join("cores").join(name))
                        .with_context(|| format!("copy {}", path.display()))?;
                }
            }
        }
        Ok(Self {
            _tmp: tmp,
            dir,
            original: original.to_path_buf(),
        })
    }

    /// Sets `table.key = value` in the staged `file` (created, empty, if absent).
    pub fn set(
        &self,
        file: &Path,
        table: Option<&str>,
        key: &str,
        value: i64,
        note: &str,
    ) -> Result<Applied> {
        let path = self.dir.join(file);
        let text = if path.is_file() {
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?
        } else {
            String::new()
        };
        let shown = self.original.join(file);
        let (new_text, old) = set_int(&shown, &text, table, key, value, note)?;
        std::fs::write(&path, new_text).with_context(|| format!("write {}", path.display()))?;
        Ok(Applied {
            file: file.to_path_buf(),
            key: dotted(table, key),
            old,
            new: value,
        })
    }

    /// Copies the staged `files` over the user's (each written to a temporary file
    /// beside it, then renamed, so a file is never half written).
    pub fn write_back(&self, files: &[PathBuf]) -> Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for f in files {
            let to = self.original.join(f);
            let text = std::fs::read(self.dir.join(f))?;
            let tmp = to.with_extension("toml.rill-perf-tune");
            std::fs::write(&tmp, text).with_context(|| format!("write {}", tmp.display()))?;
            std::fs::rename(&tmp, &to).with_context(|| format!("replace {}", to.display()))?;
            written.push(to);
        }
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOB: &str = "\
# The keyed-async job.
pipeline = \"keyed-async\"

[source]
keys = 1000            # distinct keys

[async]
mode = \"ordered\"       # or \"unordered\"
capacity = 100         # or \"auto\"
timeout_ms = 10000

[lookup]
kind = \"simulated\"     # or \"redis\"
delay_us = 1000
";

    fn f() -> &'static Path {
        Path::new("job.toml")
    }

    #[test]
    fn replacing_a_value_keeps_comments_order_and_other_keys() {
        let (out, old) = set_int(f(), JOB, Some("async"), "capacity", 16, "x").unwrap();
        assert_eq!(old.as_deref(), Some("100"));
        assert_eq!(
            out,
            JOB.replace(
                "capacity = 100 ",
                "# rill-perf tune: was 100; x\ncapacity = 16 "
            )
        );
        // What the engine reads is the same but for that key.
        let a: toml::Table = toml::from_str(JOB).unwrap();
        let mut b: toml::Table = toml::from_str(&out).unwrap();
        b["async"]["capacity"] = toml::Value::Integer(100);
        assert_eq!(a, b);
        // An indented key with its own comment above keeps both; the note goes between.
        let text = "[a]\n  # mine\n  k = 1 # trailing\n";
        let (indented, _) = set_int(f(), text, Some("a"), "k", 2, "y").unwrap();
        assert_eq!(
            indented,
            "[a]\n  # mine\n  # rill-perf tune: was 1; y\n  k = 2 # trailing\n"
        );
        // A second run replaces the note, keeping the indentation.
        let (again, _) = set_int(f(), &indented, Some("a"), "k", 3, "z").unwrap();
        assert_eq!(
            again,
            "[a]\n  # mine\n  # rill-perf tune: was 2; z\n  k = 3 # trailing\n"
        );
    }

    #[test]
    fn a_new_key_and_a_new_table_get_a_note_and_leave_the_rest_alone() {
        let (out, old) = set_int(f(), JOB, Some("checkpoint"), "interval_ms", 1500, "C/T").unwrap();
        assert_eq!(old, None);
        assert!(out.starts_with(JOB), "{out}");
        assert!(out.ends_with(
            "\n# rill-perf tune: [checkpoint] added for interval_ms\n[checkpoint]\n\
             # rill-perf tune: C/T\ninterval_ms = 1500\n"
        ));
        let (out, _) = set_int(f(), JOB, None, "max_key_groups", 256, "why").unwrap();
        let t: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(t["max_key_groups"].as_integer(), Some(256));
        assert_eq!(t["async"]["capacity"].as_integer(), Some(100));
        assert!(
            out.contains("# rill-perf tune: why\nmax_key_groups = 256\n"),
            "{out}"
        );
        assert!(out.contains("keys = 1000            # distinct keys\n"));
        assert!(out.starts_with("# The keyed-async job.\n"), "{out}");
    }

    #[test]
    fn a_comment_only_core_file_keeps_its_comments_above_the_new_keys() {
        let core = "# Template for every core.\n# ring_capacity = 1024\n";
        let (out, _) = set_int(f(), core, None, "async_capacity", 16, "λ·t").unwrap();
        assert_eq!(
            out,
            "# Template for every core.\n# ring_capacity = 1024\n\
             # rill-perf tune: λ·t\nasync_capacity = 16\n"
        );
        let (out, _) = set_int(f(), &out, None, "ring_capacity", 2048, "ring").unwrap();
        assert_eq!(
            out,
            "# Template for every core.\n# ring_capacity = 1024\n\
             # rill-perf tune: λ·t\nasync_capacity = 16\n\
             # rill-perf tune: ring\nring_capacity = 2048\n"
        );
        // A second run replaces its own note instead of piling up another.
        let (again, old) = set_int(f(), &out, None, "async_capacity", 20, "new").unwrap();
        assert_eq!(old.as_deref(), Some("16"));
        assert_eq!(
            again,
            out.replace(
                "λ·t\nasync_capacity = 16",
                "was 16; new\nasync_capacity = 20"
            )
        );
        let (empty, _) = set_int(f(), "", None, "async_capacity", 3, "n").unwrap();
        assert_eq!(empty, "# rill-perf tune: n\nasync_capacity = 3\n");
    }

    #[test]
    fn what_cannot_be_set_is_an_error_naming_the_file() {
        let e = set_int(
            Path::new("x/job.toml"),
            "async = 3\n",
            Some("async"),
            "capacity",
            1,
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("x/job.toml") && e.contains("not a table"), "{e}");
        let e = set_int(f(), "[a.b]\nc = 1\n", Some("a"), "b", 1, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("a.b") && e.contains("table"), "{e}");
        let e = set_int(f(), "x = [", None, "k", 1, "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("job.toml"), "{e}");
    }

    #[test]
    fn staging_copies_edits_and_writes_back_only_what_it_is_told() {
        let d = tempfile::tempdir().unwrap();
        let job_dir = d.path().join("myjob");
        std::fs::create_dir_all(job_dir.join("cores")).unwrap();
        std::fs::write(job_dir.join("job.toml"), JOB).unwrap();
        std::fs::write(
            job_dir.join("cores/0.toml"),
            "# CPU 0\nbatch_max = 128  # mine\n",
        )
        .unwrap();
        std::fs::write(job_dir.join("cores/1.toml"), "").unwrap();
        std::fs::write(job_dir.join("notes.txt"), "not copied").unwrap();
        let s = Staging::copy(&job_dir).unwrap();
        assert!(s.dir.ends_with("myjob"));
        assert!(!s.dir.join("notes.txt").exists());
        let a = s
            .set(Path::new("cores/0.toml"), None, "async_capacity", 9, "n")
            .unwrap();
        assert_eq!(a.key, "async_capacity");
        assert_eq!(a.old, None);
        // The user's file is untouched until written back.
        assert_eq!(
            std::fs::read_to_string(job_dir.join("cores/0.toml")).unwrap(),
            "# CPU 0\nbatch_max = 128  # mine\n"
        );
        s.write_back(std::slice::from_ref(&a.file)).unwrap();
        assert_eq!(
            std::fs::read_to_string(job_dir.join("cores/0.toml")).unwrap(),
            "# CPU 0\nbatch_max = 128  # mine\n# rill-perf tune: n\nasync_capacity = 9\n"
        );
        assert_eq!(
            std::fs::read_to_string(job_dir.join("job.toml")).unwrap(),
            JOB
        );
        assert_eq!(std::fs::read_dir(job_dir.join("cores")).unwrap().count(), 2);
    }
}
