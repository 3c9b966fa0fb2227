//! Bugs found by review, each kept as a named test.

mod common;
use common::*;
use rill_storage::frame::{encode_into, RecordSpec};
use rill_storage::*;
use std::path::Path;

fn write_seg(root: &Path, core: u32, base: u64, bytes: &[u8]) {
    let dir = root.join(format!("core-{core}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{base:020}.seg")), bytes).unwrap();
}

/// Retention walked headers without checking lengths: a huge `payload_len` overflowed
/// (a panic in debug builds, a wrong walk in release).
#[test]
fn retention_survives_a_header_with_a_huge_payload_length() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let mut b = Vec::new();
    encode_into(
        &mut b,
        &RecordSpec::full(CheckpointId(1), owner(0)),
        Lsn(0),
        CoreId(0),
        b"x",
    );
    b[8..16].copy_from_slice(&(u64::MAX - 10).to_le_bytes());
    b.resize(4096, 0);
    write_seg(root, 0, 0, &b);
    write_seg(root, 0, 65536, &[]);
    let report = CheckpointStore::new(root)
        .retain(1, &Default::default())
        .unwrap();
    // The segment cannot be walked past its bad header, so it is kept.
    assert!(report.plan.delete_segments.is_empty(), "{report:?}");
    assert!(root.join("core-0").join(format!("{:020}.seg", 0)).exists());
}

/// A segment named near `u64::MAX` made recovery and the writer overflow Lsn arithmetic.
#[test]
fn a_segment_named_near_the_end_of_the_lsn_space_is_corruption_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let base = u64::MAX - 50;
    let mut b = Vec::new();
    encode_into(
        &mut b,
        &RecordSpec::blob(CheckpointId(1), owner(0)),
        Lsn(base),
        CoreId(0),
        b"x",
    );
    let l = b.len() as u64;
    let next = Lsn(base.wrapping_add(l));
    encode_into(
        &mut b,
        &RecordSpec::blob(CheckpointId(1), owner(0)),
        next,
        CoreId(0),
        b"y",
    );
    write_seg(root, 0, base, &b);
    recover(root).unwrap();
    let err = LogWriter::open_with(StdFs, root, CoreId(0), LogConfig::default())
        .err()
        .expect("no room after this segment");
    assert!(err.is_corruption(), "{err}");
}

/// Retention counted a checkpoint as complete when its manifest parsed, even with a
/// corrupt record, and deleted the only checkpoint that still loaded.
#[test]
fn retention_never_deletes_the_newest_checkpoint_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let payload = vec![7u8; 40 << 10];
    let w = std_writer(root, 0);
    let r1 = block_on(w.append(RecordSpec::blob(CheckpointId(1), owner(0)), &payload)).unwrap();
    let r2 = block_on(w.append(RecordSpec::blob(CheckpointId(2), owner(0)), &payload)).unwrap();
    let _r3 = block_on(w.append(RecordSpec::blob(CheckpointId(3), owner(0)), &payload)).unwrap();
    block_on(w.close()).unwrap();
    assert_ne!(
        r1.segment, r2.segment,
        "the records sit in different segments"
    );
    let store = CheckpointStore::new(root);
    store
        .publish(&Manifest::new(CheckpointId(1), vec![r1], vec![]))
        .unwrap();
    store
        .publish(&Manifest::new(CheckpointId(2), vec![r2], vec![]))
        .unwrap();
    // One bit flips in checkpoint 2's record.
    let p = root
        .join("core-0")
        .join(format!("{:020}.seg", r2.segment.0));
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[(r2.lsn.0 - r2.segment.0) as usize + 100] ^= 1;
    std::fs::write(&p, &bytes).unwrap();
    assert_eq!(
        recover(root).unwrap().report.newest_complete,
        Some(CheckpointId(1))
    );
    store.retain(1, &Default::default()).unwrap();
    assert_eq!(
        recover(root).unwrap().report.newest_complete,
        Some(CheckpointId(1)),
        "retention deleted the only complete checkpoint"
    );
}

/// Recovery read a manifest that failed to load for a reason other than absence (EIO,
/// EACCES; here EISDIR) as if it were absent, and then cut off the records that checkpoint
/// needs as a torn tail. It must stop with the error, naming the manifest, and change
/// nothing.
#[test]
fn recovery_stops_on_a_manifest_it_cannot_read_instead_of_truncating() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let w = std_writer(root, 0);
    let r1 = block_on(w.append(RecordSpec::blob(CheckpointId(1), owner(0)), b"one")).unwrap();
    let r2 = block_on(w.append(RecordSpec::blob(CheckpointId(2), owner(0)), &[2u8; 512])).unwrap();
    block_on(w.close()).unwrap();
    assert_eq!(
        r1.segment, r2.segment,
        "both records sit in the newest segment"
    );
    let store = CheckpointStore::new(root);
    store
        .publish(&Manifest::new(CheckpointId(1), vec![r1], vec![]))
        .unwrap();
    store
        .publish(&Manifest::new(CheckpointId(2), vec![r2], vec![]))
        .unwrap();
    // Checkpoint 2's record goes bad: the scan of the segment ends before it.
    let seg = layout::segment_path(root, CoreId(0), r2.segment);
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[(r2.lsn.0 - r2.segment.0) as usize + 100] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    let len = bytes.len() as u64;
    // Its manifest cannot be read (a directory in its place: EISDIR, also as root).
    let m2 = layout::manifest_path(root, CheckpointId(2));
    std::fs::remove_file(&m2).unwrap();
    std::fs::create_dir(&m2).unwrap();

    let err = recover(root).expect_err("an unreadable manifest stops recovery");
    match &err {
        Error::Io { path, .. } => assert_eq!(path, &m2, "{err}"),
        other => panic!("expected the IO error of {}, got {other}", m2.display()),
    }
    assert!(err.to_string().contains(&m2.display().to_string()), "{err}");
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        len,
        "recovery truncated the segment although a manifest it could not read may need it"
    );
}
