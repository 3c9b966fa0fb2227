//! Corruption on disk: bit flips anywhere in a segment, truncation anywhere, garbage files
//! and a wrong format version never panic and are reported as corruption naming the file and
//! offset; a checkpoint naming a bad record is skipped for the previous complete one.

mod common;
use common::*;
use rill_storage::*;

/// Writes checkpoint 1 (full) and 2 (delta) for two owners; returns every record ref.
fn two_checkpoints(root: &std::path::Path) -> (Vec<RecordRef>, Vec<RecordRef>) {
    let log = std_writer(root, 0);
    let mut c1 = Vec::new();
    let mut c2 = Vec::new();
    block_on(async {
        for i in 0..2 {
            let mut state: Vec<(u64, u64)> = (0..200).map(|k| (k, k + u64::from(i))).collect();
            c1.push(
                log.append_full(
                    CheckpointId(1),
                    owner(i),
                    &archive_full(&mut state).unwrap(),
                )
                .await
                .unwrap(),
            );
        }
        c2.extend(c1.iter().copied());
        for i in 0..2 {
            let d = archive_delta(&mut vec![(5u64, 500u64)], &mut vec![6u64]).unwrap();
            c2.push(
                log.append_delta(CheckpointId(2), CheckpointId(1), owner(i), &d)
                    .await
                    .unwrap(),
            );
        }
        log.close().await.unwrap();
    });
    let store = CheckpointStore::new(root);
    store
        .publish(&Manifest::new(CheckpointId(1), c1.clone(), vec![]))
        .unwrap();
    store
        .publish(&Manifest::new(CheckpointId(2), c2.clone(), vec![]))
        .unwrap();
    (c1, c2)
}

fn delta_records(c2: &[RecordRef]) -> impl Iterator<Item = &RecordRef> {
    c2.iter().filter(|r| r.kind == RecordKind::Delta)
}

#[test]
fn every_bit_flip_in_a_delta_falls_back_to_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c2) = two_checkpoints(dir.path());
    let d = *delta_records(&c2).next().unwrap();
    let path = layout::segment_path(dir.path(), d.core, d.segment);
    let pristine = std::fs::read(&path).unwrap();
    let start = (d.lsn.0 - d.segment.0) as usize;
    // Every bit of the record (header and payload), a step of 7 bits to keep it quick.
    for bit in (start * 8..(start + d.len as usize) * 8).step_by(7) {
        let mut bytes = pristine.clone();
        bytes[bit / 8] ^= 1 << (bit % 8);
        std::fs::write(&path, &bytes).unwrap();
        let store = CheckpointStore::new(dir.path());
        let err = store.load(CheckpointId(2)).unwrap_err();
        assert!(err.is_corruption(), "bit {bit}: {err}");
        let msg = err.to_string();
        assert!(
            msg.contains(".seg") && msg.contains("offset"),
            "error names file and offset: {msg}"
        );
        let (c, skipped) = store.newest_complete().unwrap();
        assert_eq!(c.unwrap().id(), CheckpointId(1), "bit {bit}");
        assert_eq!(skipped.len(), 1);
        assert_eq!(skipped[0].checkpoint, CheckpointId(2));
    }
}

#[test]
fn truncation_anywhere_is_reported_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c2) = two_checkpoints(dir.path());
    let seg = c2[0].segment;
    let path = layout::segment_path(dir.path(), CoreId(0), seg);
    let pristine = std::fs::read(&path).unwrap();
    let last_end = c2.iter().map(|r| r.lsn.0 - seg.0 + r.len).max().unwrap();
    for cut in (0..=last_end as usize).step_by(37) {
        std::fs::write(&path, &pristine[..cut]).unwrap();
        let store = CheckpointStore::new(dir.path());
        for r in &c2 {
            let end = r.lsn.0 - seg.0 + r.len;
            match store.reader().read(r) {
                Ok(v) => assert!(end <= cut as u64 && v.payload().len() as u64 == r.len - 64),
                Err(e) => assert!(end > cut as u64 && e.is_corruption(), "cut {cut}: {e}"),
            }
        }
        let (c, _) = store.newest_complete().unwrap();
        let fits = |r: &RecordRef| r.lsn.0 - seg.0 + r.len <= cut as u64;
        let want = if c2.iter().all(fits) {
            Some(CheckpointId(2))
        } else if c2.iter().filter(|r| r.kind == RecordKind::Full).all(fits) {
            Some(CheckpointId(1))
        } else {
            None
        };
        assert_eq!(c.map(|c| c.id()), want, "cut {cut}");
    }
}

#[test]
fn missing_segment_skips_to_previous_and_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let (c1, _) = two_checkpoints(dir.path());
    // Checkpoint 3 names a record in a segment that does not exist.
    let mut ghost = c1[0];
    ghost.segment = Lsn(1 << 40);
    ghost.lsn = Lsn(1 << 40);
    ghost.checkpoint = CheckpointId(3);
    ghost.base = CheckpointId(3);
    let store = CheckpointStore::new(dir.path());
    store
        .publish(&Manifest::new(CheckpointId(3), vec![ghost], vec![]))
        .unwrap();
    let r = recover(dir.path()).unwrap();
    assert_eq!(r.report.newest_complete, Some(CheckpointId(2)));
    assert_eq!(r.report.skipped.len(), 1);
    let Error::BadCheckpointRecord {
        checkpoint, source, ..
    } = &r.report.skipped[0].error
    else {
        panic!("{:?}", r.report.skipped[0].error)
    };
    assert_eq!(*checkpoint, CheckpointId(3));
    assert!(matches!(**source, Error::MissingSegment { .. }));
}

#[test]
fn garbage_files_and_wrong_versions_are_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c2) = two_checkpoints(dir.path());
    let root = dir.path();
    // A garbage manifest newer than the good ones, a garbage segment, stray files.
    std::fs::write(
        layout::manifest_path(root, CheckpointId(9)),
        b"not a manifest at all",
    )
    .unwrap();
    std::fs::create_dir_all(layout::core_dir(root, CoreId(5))).unwrap();
    std::fs::write(
        layout::segment_path(root, CoreId(5), Lsn(0)),
        vec![0xAB; 10_000],
    )
    .unwrap();
    std::fs::write(layout::core_dir(root, CoreId(0)).join("README"), b"hi").unwrap();
    // A manifest with the wrong format version.
    let mut m = Manifest::new(CheckpointId(8), c2.clone(), vec![]).encode();
    m[4] ^= 0x7;
    std::fs::write(layout::manifest_path(root, CheckpointId(8)), m).unwrap();
    let r = recover(root).unwrap();
    assert_eq!(r.report.newest_complete, Some(CheckpointId(2)));
    let skipped: Vec<_> = r.report.skipped.iter().map(|s| s.checkpoint).collect();
    assert_eq!(skipped, vec![CheckpointId(9), CheckpointId(8)]);
    assert!(r.report.skipped.iter().all(|s| s.error.is_corruption()));
    assert!(matches!(
        r.report.skipped[1].error,
        Error::Corrupt {
            corruption: Corruption::UnsupportedVersion { .. },
            ..
        }
    ));
    // The garbage segment is the newest of core 5: recovery cut it to its valid prefix (0).
    assert!(r
        .report
        .truncated
        .iter()
        .any(|t| t.to_len == 0 && matches!(t.found, frame::ScanEnd::Invalid(_))));
}

#[test]
fn typed_access_of_the_wrong_type_or_kind_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (_, c2) = two_checkpoints(dir.path());
    let store = CheckpointStore::new(dir.path());
    let delta = store
        .reader()
        .read(delta_records(&c2).next().unwrap())
        .unwrap();
    assert!(matches!(
        FullView::<u64, u64>::open(&delta),
        Err(Error::WrongKind { .. })
    ));
    let full = store.reader().read(&c2[0]).unwrap();
    // A map of u64 -> u64 is not a map of String -> u64 (validation, not UB).
    assert!(matches!(
        FullView::<String, u64>::open(&full),
        Err(Error::InvalidArchive { .. })
    ));
}
