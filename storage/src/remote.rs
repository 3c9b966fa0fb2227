//! Checkpoints in S3-compatible object storage: the local log stays the write-ahead path
//! and this module mirrors what a complete checkpoint needs into a bucket, reads it back
//! into an empty (or stale) local directory before recovery, and publishes the global
//! manifest of a multi-process job with a conditional write. It blocks (its own
//! current-thread tokio runtime) and must never run on a pinned core: the engine calls it
//! from its housekeeping thread and before the cores start.
//!
//! ```text
//! <prefix>/core-<N>/<segment base, 20 digits>.seg/<from, 20 digits>-<to, 20 digits>
//!                         bytes from..to of that local segment file (a piece)
//! <prefix>/manifests/<checkpoint, 20 digits>.manifest      the manifest file, byte for byte
//! <prefix>/global/<checkpoint, 20 digits>.manifest         a job's global decision on
//!                         that checkpoint: its global manifest, or an abort (written by
//!                         whichever process got there first; one create-if-absent key
//!                         decides)
//! ```
//!
//! A segment is append-only, and what a manifest names was fdatasync'ed before the
//! manifest was written, so the bytes `0..end` of a segment never change once a manifest
//! names a record ending at `end`. Uploading a checkpoint therefore sends, per segment,
//! only the bytes past what is already in the store (a new piece `from..to`), then the
//! manifest: a checkpoint is in the store once its manifest object is. The pieces of a
//! segment join up from 0 and are written create-if-absent (a retried piece of the same
//! range holds the same bytes). Endpoint, region and credentials come from the standard
//! AWS environment variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, ...).

use crate::error::{Error, IoOp, Result};
use crate::ids::{CheckpointId, CoreId, Lsn};
use crate::layout;
use crate::manifest::{self, Manifest};
use futures::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::FileExt;
use std::path::Path;

/// Splits `s3://bucket/prefix` into the bucket and the prefix (without slashes at either
/// end; empty for the bucket's root). `None` when `url` is not an `s3://` URL at all.
pub fn parse_s3_url(url: &str) -> Option<Result<(String, String)>> {
    let rest = url.strip_prefix("s3://")?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let bad = |problem: &str| {
        Some(Err(Error::RemoteConfig {
            url: url.to_string(),
            problem: problem.to_string(),
        }))
    };
    if bucket.len() < 3
        || bucket.len() > 63
        || !bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return bad("the bucket name must be 3 to 63 lower-case letters, digits, '-' or '.'");
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
        return bad("the prefix must not contain '.', '..' or empty path parts");
    }
    Some(Ok((bucket.to_string(), prefix.to_string())))
}

/// What [`Remote::publish_global`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GlobalOutcome {
    /// This call wrote the global manifest.
    Won,
    /// Another call had written it first (the checkpoint is globally complete all the same).
    Lost,
    /// The checkpoint was aborted for the whole job ([`Remote::abort_global`] got there
    /// first), with the reason recorded.
    Aborted(String),
    /// These processes' manifests are not in the store yet: nothing was written.
    Missing(Vec<String>),
}

/// A job's global decision on checkpoint `n`: complete for every process once this object
/// exists without `aborted`; then it names each process's manifest object (its prefix,
/// size and ETag). With `aborted`, the checkpoint never completes anywhere.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GlobalManifest {
    /// The checkpoint.
    pub checkpoint: CheckpointId,
    /// One entry per process, in the order given to [`Remote::publish_global`].
    pub processes: Vec<ProcessManifest>,
    /// Set when the checkpoint was aborted for the whole job ([`Remote::abort_global`]):
    /// why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

impl GlobalManifest {
    /// Whether checkpoint `checkpoint` completed for the whole job.
    pub fn is_complete(&self) -> bool {
        self.aborted.is_none()
    }
}

/// One process's manifest as the global manifest names it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessManifest {
    /// The process's prefix under the job's prefix.
    pub prefix: String,
    /// Size of its manifest object, bytes.
    pub size: u64,
    /// Its manifest object's ETag, as the store reported it.
    pub e_tag: Option<String>,
}

/// A checkpoint location in object storage (`s3://bucket/prefix`).
pub struct Remote {
    rt: tokio::runtime::Runtime,
    store: AmazonS3,
    bucket: String,
    prefix: String,
    /// Where each segment's pieces end in the store (learnt by listing, or by uploading).
    ends: HashMap<(CoreId, Lsn), u64>,
    /// Segments and manifests this process put in the store: the only ones it deletes
    /// when local retention deletes them (anything older may be a savepoint or a
    /// checkpoint this process never saw).
    mine_segments: BTreeSet<(CoreId, Lsn)>,
    mine_manifests: BTreeSet<CheckpointId>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url(""))
    }
}

fn io_err(op: IoOp, path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(op, path, e)
}

fn parse_piece(name: &str) -> Option<(u64, u64)> {
    let (a, b) = name.split_once('-')?;
    if a.len() != 20 || b.len() != 20 {
        return None;
    }
    Some((a.parse().ok()?, b.parse().ok()?))
}

impl Remote {
    /// Opens `url` (`s3://bucket/prefix`) with endpoint, region and credentials from the
    /// standard AWS environment variables. An `http://` endpoint is allowed (a local
    /// SeaweedFS or MinIO); the region defaults to `us-east-1`. Nothing is sent yet.
    pub fn open(url: &str) -> Result<Remote> {
        Remote::open_with(url, std::iter::empty::<(String, String)>())
    }

    /// [`Remote::open`] with `options` (lower-case `aws_*` keys such as `aws_endpoint`,
    /// `aws_access_key_id`; see `object_store`'s `AmazonS3ConfigKey`) over the environment.
    pub fn open_with<K: AsRef<str>, V: Into<String>>(
        url: &str,
        options: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Remote> {
        let (bucket, prefix) = parse_s3_url(url).unwrap_or_else(|| {
            Err(Error::RemoteConfig {
                url: url.to_string(),
                problem: "not an s3://bucket/prefix URL".into(),
            })
        })?;
        let mut b = AmazonS3Builder::from_env();
        for (k, v) in options {
            let key = k.as_ref().parse().map_err(|e| Error::RemoteConfig {
                url: url.to_string(),
                problem: format!("S3 option {}: {e}", k.as_ref()),
            })?;
            b = b.with_config(key, v);
        }
        b = b.with_bucket_name(&bucket);
        if b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Endpoint)
            .is_some_and(|e| e.starts_with("http://"))
        {
            b = b.with_allow_http(true);
        }
        if b.get_config_value(&object_store::aws::AmazonS3ConfigKey::Region)
            .is_none()
        {
            b = b.with_region("us-east-1");
        }
        // A store that does not answer fails the checkpoint within about 20 s (5 retries,
        // backoff 0.1 s doubling to 2 s) instead of object_store's 3 minutes: the
        // checkpoint's own timeout and the restart strategy take it from there.
        b = b.with_retry(object_store::RetryConfig {
            backoff: object_store::BackoffConfig {
                init_backoff: std::time::Duration::from_millis(100),
                max_backoff: std::time::Duration::from_secs(2),
                base: 2.0,
            },
            max_retries: 5,
            retry_timeout: std::time::Duration::from_secs(20),
        });
        let store = b.build().map_err(|e| Error::RemoteConfig {
            url: url.to_string(),
            problem: format!(
                "cannot set up the S3 client from the environment (AWS_ENDPOINT_URL, \
                 AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY): {e}"
            ),
        })?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::RemoteConfig {
                url: url.to_string(),
                problem: format!("cannot start the S3 client's runtime: {e}"),
            })?;
        Ok(Remote {
            rt,
            store,
            bucket,
            prefix,
            ends: HashMap::new(),
            mine_segments: BTreeSet::new(),
            mine_manifests: BTreeSet::new(),
        })
    }

    fn key(&self, rel: &str) -> String {
        if self.prefix.is_empty() || rel.is_empty() {
            format!("{}{rel}", self.prefix)
        } else {
            format!("{}/{rel}", self.prefix)
        }
    }

    /// `s3://bucket/<prefix>/<rel>`, for messages.
    pub fn url(&self, rel: &str) -> String {
        format!("s3://{}/{}", self.bucket, self.key(rel))
    }

    fn seg_rel(core: CoreId, base: Lsn) -> String {
        format!("core-{}/{:020}.seg", core.0, base.0)
    }

    fn manifest_rel(id: CheckpointId) -> String {
        format!("manifests/{:020}.manifest", id.0)
    }

    fn err(&self, op: &'static str, rel: &str) -> impl FnOnce(object_store::Error) -> Error {
        let url = self.url(rel);
        move |source| Error::Remote { op, url, source }
    }

    /// Writes `bytes` at `rel` unless an object is there; `Ok(false)` when one was.
    pub fn put_if_absent(&self, rel: &str, bytes: Vec<u8>) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let path = ObjPath::from(self.key(rel));
        match self
            .rt
            .block_on(self.store.put_opts(&path, PutPayload::from(bytes), opts))
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(self.err("put", rel)(e)),
        }
    }

    /// Reads the object at `rel`; `Ok(None)` when there is none.
    pub fn get(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        let path = ObjPath::from(self.key(rel));
        let r = self.rt.block_on(async {
            let g = self.store.get(&path).await?;
            g.bytes().await
        });
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("get", rel)(e)),
        }
    }

    /// Names (relative to `rel_dir`) and sizes of the objects under `rel_dir`, recursively.
    fn list(&self, rel_dir: &str) -> Result<Vec<(String, u64)>> {
        let full = self.key(rel_dir);
        let path = ObjPath::from(full.as_str());
        let metas: Vec<object_store::ObjectMeta> = self
            .rt
            .block_on(self.store.list(Some(&path)).try_collect())
            .map_err(self.err("list", rel_dir))?;
        let strip = if full.is_empty() {
            String::new()
        } else {
            format!("{full}/")
        };
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let loc = m.location.to_string();
                let rel = loc.strip_prefix(&strip)?.to_string();
                Some((rel, m.size))
            })
            .collect())
    }

    /// Deletes the object at `rel` (absent already: fine).
    pub fn delete(&self, rel: &str) -> Result<()> {
        let path = ObjPath::from(self.key(rel));
        match self.rt.block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("delete", rel)(e)),
        }
    }

    /// Checkpoints whose manifest is in the store, ascending.
    pub fn list_manifests(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .list("manifests")?
            .into_iter()
            .filter_map(|(n, _)| {
                let stem = n.strip_suffix(".manifest")?;
                (stem.len() == 20).then(|| stem.parse().ok().map(CheckpointId))?
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The pieces of a segment in the store, `(from, to)` ascending.
    fn pieces(&self, core: CoreId, base: Lsn) -> Result<Vec<(u64, u64)>> {
        let mut p: Vec<(u64, u64)> = self
            .list(&Self::seg_rel(core, base))?
            .into_iter()
            .filter_map(|(n, _)| parse_piece(&n))
            .collect();
        p.sort();
        Ok(p)
    }

    /// Where the joined-up pieces of a segment end (0: none); errors on a gap.
    fn remote_end(&mut self, core: CoreId, base: Lsn) -> Result<u64> {
        if let Some(&e) = self.ends.get(&(core, base)) {
            return Ok(e);
        }
        let mut end = 0;
        for (from, to) in self.pieces(core, base)? {
            if from > end {
                return Err(Error::RemoteGap {
                    url: self.url(&Self::seg_rel(core, base)),
                    at: end,
                    next: from,
                });
            }
            end = end.max(to);
        }
        self.ends.insert((core, base), end);
        Ok(end)
    }

    /// Puts what `m` needs into the store: per segment the bytes past what is there
    /// already, read from the local log under `root`, then the manifest itself. Returns
    /// the bytes of segment data sent. Once this returns, the checkpoint is in the store.
    pub fn upload_checkpoint(&mut self, root: &Path, m: &Manifest) -> Result<u64> {
        let mut need: BTreeMap<(CoreId, Lsn), u64> = BTreeMap::new();
        for r in &m.records {
            let end = r.lsn.0 - r.segment.0 + r.len;
            let e = need.entry((r.core, r.segment)).or_default();
            *e = (*e).max(end);
        }
        let mut sent = 0;
        for ((core, base), end) in need {
            let have = self.remote_end(core, base)?;
            if end <= have {
                continue;
            }
            let path = layout::segment_path(root, core, base);
            let f = std::fs::File::open(&path).map_err(io_err(IoOp::Open, &path))?;
            let mut buf = vec![0u8; (end - have) as usize];
            f.read_exact_at(&mut buf, have)
                .map_err(io_err(IoOp::Read, &path))?;
            let rel = format!("{}/{have:020}-{end:020}", Self::seg_rel(core, base));
            // Already there: a retry of the same range, the same bytes.
            self.put_if_absent(&rel, buf)?;
            sent += end - have;
            self.ends.insert((core, base), end);
            if have == 0 {
                // This process put the segment into the store.
                self.mine_segments.insert((core, base));
            }
        }
        let rel = Self::manifest_rel(m.checkpoint);
        let path = ObjPath::from(self.key(&rel));
        self.rt
            .block_on(self.store.put(&path, PutPayload::from(m.encode())))
            .map_err(self.err("put", &rel))?;
        self.mine_manifests.insert(m.checkpoint);
        tracing::info!(
            checkpoint = m.checkpoint.0,
            bytes = sent,
            "checkpoint uploaded to {}",
            self.url("")
        );
        Ok(sent)
    }

    /// Reads checkpoint `id`'s manifest from the store (`Ok(None)`: not there).
    pub fn load_manifest(&self, id: CheckpointId) -> Result<Option<Manifest>> {
        let rel = Self::manifest_rel(id);
        match self.get(&rel)? {
            None => Ok(None),
            Some(b) => Manifest::decode(&b, Path::new(&self.url(&rel))).map(Some),
        }
    }

    /// Brings checkpoint `id` from the store into the local directory `root`: its manifest
    /// and, per core, every segment from the oldest it names to the newest in the store
    /// (so that a log writer opened on `root` starts past anything in the store), each
    /// joined from its pieces. A local segment at least as long is kept as it is. Run it
    /// before [`crate::recover`], which then validates what came down as usual. Returns
    /// the bytes downloaded, or `Ok(None)` when the store has no such manifest.
    pub fn download_checkpoint(&mut self, root: &Path, id: CheckpointId) -> Result<Option<u64>> {
        let Some(m) = self.load_manifest(id)? else {
            return Ok(None);
        };
        let mut oldest: BTreeMap<CoreId, Lsn> = BTreeMap::new();
        for (core, base) in m.segments() {
            let e = oldest.entry(core).or_insert(base);
            *e = (*e).min(base);
        }
        let segs = self.segments_in_store()?;
        let mut got = 0;
        for (core, bases) in &segs {
            let newest = bases.iter().next_back().copied();
            for &base in bases {
                let wanted = oldest.get(core).is_some_and(|&o| base >= o) || Some(base) == newest;
                if wanted {
                    got += self.download_segment(root, *core, base)?;
                }
            }
        }
        manifest::publish(root, &m)?;
        Ok(Some(got))
    }

    /// Downloads, per core, the newest segment in the store into `root` (kept when the
    /// local one is at least as long). A log writer opened on `root` then starts a new
    /// segment past every segment in the store: a run that starts without downloading a
    /// checkpoint (`--fresh`, or a checkpoint that is local already) never writes a
    /// segment under a name the store has. Returns the bytes downloaded.
    pub fn download_newest_segments(&mut self, root: &Path) -> Result<u64> {
        let mut got = 0;
        for (core, bases) in self.segments_in_store()? {
            if let Some(&newest) = bases.iter().next_back() {
                got += self.download_segment(root, core, newest)?;
            }
        }
        Ok(got)
    }

    /// The segments in the store, per core.
    fn segments_in_store(&self) -> Result<BTreeMap<CoreId, BTreeSet<Lsn>>> {
        let mut segs: BTreeMap<CoreId, BTreeSet<Lsn>> = BTreeMap::new();
        for (name, _) in self.list("")? {
            let mut parts = name.split('/');
            let (Some(c), Some(s)) = (parts.next(), parts.next()) else {
                continue;
            };
            let Some(core) = c.strip_prefix("core-").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Some(base) = s
                .strip_suffix(".seg")
                .filter(|b| b.len() == 20)
                .and_then(|b| b.parse().ok())
            else {
                continue;
            };
            segs.entry(CoreId(core)).or_default().insert(Lsn(base));
        }
        Ok(segs)
    }

    fn download_segment(&mut self, root: &Path, core: CoreId, base: Lsn) -> Result<u64> {
        let end = self.remote_end(core, base)?;
        let path = layout::segment_path(root, core, base);
        match std::fs::metadata(&path) {
            Ok(md) if md.len() >= end => return Ok(0),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(IoOp::Read, &path, e)),
        }
        let mut bytes = Vec::with_capacity(end as usize);
        for (from, to) in self.pieces(core, base)? {
            if to <= bytes.len() as u64 {
                continue;
            }
            let rel = format!("{}/{from:020}-{to:020}", Self::seg_rel(core, base));
            let piece = self.get(&rel)?.ok_or_else(|| Error::RemoteGap {
                url: self.url(&Self::seg_rel(core, base)),
                at: bytes.len() as u64,
                next: from,
            })?;
            if from != bytes.len() as u64 || piece.len() as u64 != to - from {
                return Err(Error::RemoteGap {
                    url: self.url(&rel),
                    at: bytes.len() as u64,
                    next: from,
                });
            }
            bytes.extend_from_slice(&piece);
        }
        let dir = layout::core_dir(root, core);
        layout::create_dir_durable(&dir)?;
        let tmp = dir.join(format!("{:020}.seg.download", base.0));
        std::fs::write(&tmp, &bytes).map_err(io_err(IoOp::Write, &tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_err(IoOp::Sync, &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io_err(IoOp::Rename, &path))?;
        layout::sync_dir(&dir)?;
        Ok(bytes.len() as u64)
    }

    /// Deletes from the store what this process uploaded and the local retention has
    /// since deleted under `root` (manifests, then whole segments). Anything older is
    /// left alone: it may be a savepoint or a checkpoint of a run this process never saw.
    pub fn mirror_retention(&mut self, root: &Path) -> Result<()> {
        let local: BTreeSet<CheckpointId> = layout::list_manifests(root)?.into_iter().collect();
        let gone: Vec<CheckpointId> = self
            .mine_manifests
            .iter()
            .filter(|c| !local.contains(c))
            .copied()
            .collect();
        for c in gone {
            self.delete(&Self::manifest_rel(c))?;
            self.mine_manifests.remove(&c);
        }
        let mut gone = Vec::new();
        for &(core, base) in &self.mine_segments {
            if !layout::segment_path(root, core, base).exists() {
                gone.push((core, base));
            }
        }
        for (core, base) in gone {
            for (from, to) in self.pieces(core, base)? {
                self.delete(&format!(
                    "{}/{from:020}-{to:020}",
                    Self::seg_rel(core, base)
                ))?;
            }
            self.mine_segments.remove(&(core, base));
            self.ends.remove(&(core, base));
        }
        Ok(())
    }

    /// Publishes checkpoint `n`'s global manifest under `global/` once every process's
    /// manifest for `n` is in the store (process `p`'s at `<p>/manifests/<n>.manifest`
    /// under this location), with a create-if-absent write: of any number of concurrent
    /// callers exactly one gets [`GlobalOutcome::Won`]. Nothing is written while a
    /// process's manifest is missing.
    pub fn publish_global(&self, n: CheckpointId, processes: &[String]) -> Result<GlobalOutcome> {
        let mut named = Vec::with_capacity(processes.len());
        let mut missing = Vec::new();
        for p in processes {
            let rel = format!("{p}/{}", Self::manifest_rel(n));
            let path = ObjPath::from(self.key(&rel));
            match self.rt.block_on(self.store.head(&path)) {
                Ok(meta) => named.push(ProcessManifest {
                    prefix: p.clone(),
                    size: meta.size,
                    e_tag: meta.e_tag,
                }),
                Err(object_store::Error::NotFound { .. }) => missing.push(p.clone()),
                Err(e) => return Err(self.err("head", &rel)(e)),
            }
        }
        if !missing.is_empty() {
            return Ok(GlobalOutcome::Missing(missing));
        }
        let g = GlobalManifest {
            checkpoint: n,
            processes: named,
            aborted: None,
        };
        let bytes = serde_json::to_vec(&g).expect("a global manifest always serializes");
        if self.put_if_absent(&Self::global_rel(n), bytes)? {
            return Ok(GlobalOutcome::Won);
        }
        Ok(match self.load_global(n)? {
            Some(GlobalManifest {
                aborted: Some(why), ..
            }) => GlobalOutcome::Aborted(why),
            _ => GlobalOutcome::Lost,
        })
    }

    /// Aborts checkpoint `n` for the whole job unless it completed: writes the global
    /// decision "aborted, `reason`" with the same create-if-absent write as
    /// [`Remote::publish_global`], so that of a publish and an abort racing exactly one
    /// decides. Returns the decision that holds: `None` when `n` is aborted (by this call
    /// or an earlier one), the global manifest when `n` had completed.
    pub fn abort_global(&self, n: CheckpointId, reason: &str) -> Result<Option<GlobalManifest>> {
        let g = GlobalManifest {
            checkpoint: n,
            processes: Vec::new(),
            aborted: Some(reason.to_string()),
        };
        let bytes = serde_json::to_vec(&g).expect("a global manifest always serializes");
        if self.put_if_absent(&Self::global_rel(n), bytes)? {
            return Ok(None);
        }
        Ok(self.load_global(n)?.filter(GlobalManifest::is_complete))
    }

    /// The checkpoints with a global decision (complete or aborted), ascending.
    pub fn list_globals(&self) -> Result<Vec<CheckpointId>> {
        let mut ids: Vec<CheckpointId> = self
            .list("global")?
            .into_iter()
            .filter_map(|(n, _)| {
                let stem = n.strip_suffix(".manifest")?;
                (stem.len() == 20).then(|| stem.parse().ok().map(CheckpointId))?
            })
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The newest checkpoint complete for the whole job, at most `at_most`: reads the
    /// global decisions from the newest down until one is complete.
    pub fn newest_complete_global(
        &self,
        at_most: Option<CheckpointId>,
    ) -> Result<Option<CheckpointId>> {
        for id in self.list_globals()?.into_iter().rev() {
            if at_most.is_some_and(|m| id > m) {
                continue;
            }
            if self.load_global(id)?.is_some_and(|g| g.is_complete()) {
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn global_rel(n: CheckpointId) -> String {
        format!("global/{:020}.manifest", n.0)
    }

    /// Checkpoint `n`'s global decision (a global manifest, or an abort), if any.
    pub fn load_global(&self, n: CheckpointId) -> Result<Option<GlobalManifest>> {
        let rel = Self::global_rel(n);
        match self.get(&rel)? {
            None => Ok(None),
            Some(b) => {
                serde_json::from_slice(&b)
                    .map(Some)
                    .map_err(|source| Error::ManifestFormat {
                        path: self.url(&rel).into(),
                        source,
                    })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_urls() {
        let ok = |u: &str| parse_s3_url(u).unwrap().unwrap();
        assert_eq!(ok("s3://bkt/a/b/"), ("bkt".into(), "a/b".into()));
        assert_eq!(ok("s3://bkt"), ("bkt".into(), "".into()));
        assert_eq!(ok("s3://my.bucket-1/x"), ("my.bucket-1".into(), "x".into()));
        assert!(parse_s3_url("checkpoints").is_none());
        assert!(parse_s3_url("/abs/dir").is_none());
        for bad in [
            "s3://",
            "s3://ab/x",
            "s3://Bkt/x",
            "s3://bkt/a/../b",
            "s3://bkt/a//b",
        ] {
            assert!(
                matches!(parse_s3_url(bad), Some(Err(Error::RemoteConfig { .. }))),
                "{bad}"
            );
        }
    }

    #[test]
    fn piece_names() {
        assert_eq!(
            parse_piece("00000000000000000000-00000000000000004096"),
            Some((0, 4096))
        );
        assert_eq!(parse_piece("0-4096"), None);
        assert_eq!(parse_piece("00000000000000000000.seg"), None);
    }
}
