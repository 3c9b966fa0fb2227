//! The real io_uring path: glommio DMA files inside a LocalExecutor. Concurrent appends from
//! many tasks are group-committed, segments roll at the configured size, a record larger
//! than a segment gets one of its own, and everything reads back through the mmap reader.

use rill_storage::*;
use std::rc::Rc;

fn owner(i: u32) -> Owner {
    Owner::new(OperatorId(3), PartitionId(i), KeyGroupRange::single(i))
}

fn payload(i: u32) -> Vec<u8> {
    let len = [10usize, 4096, 50_000, 200_000, 1][i as usize % 5];
    (0..len).map(|j| (i as usize * 7 + j) as u8).collect()
}

#[test]
fn concurrent_appends_roll_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let cfg = LogConfig {
        segment_bytes: 256 << 10,
        max_write_bytes: 64 << 10,
    };
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    let refs = ex.run(async move {
        let log = Rc::new(LogWriter::open(&root, CoreId(1), cfg).await.unwrap());
        let tasks: Vec<_> = (0..40u32)
            .map(|i| {
                let log = log.clone();
                glommio::spawn_local(async move {
                    let r = log
                        .append(RecordSpec::blob(CheckpointId(1), owner(i)), &payload(i))
                        .await
                        .unwrap();
                    assert!(
                        log.durable_lsn() >= r.lsn.advance(r.len),
                        "resolved only once durable"
                    );
                    (i, r)
                })
            })
            .collect();
        let mut refs = Vec::new();
        for t in tasks {
            refs.push(t.await);
        }
        let stats = log.stats();
        assert_eq!(stats.records, 40);
        assert!(
            stats.flushes < 40,
            "concurrent appends share flushes: {stats:?}"
        );
        // A record larger than a whole segment.
        let big = vec![0x5A; 1 << 20];
        refs.push((
            999,
            log.append(RecordSpec::blob(CheckpointId(2), owner(0)), &big)
                .await
                .unwrap(),
        ));
        Rc::try_unwrap(log).ok().unwrap().close().await.unwrap();
        refs
    });
    let segments = layout::list_segments(dir.path(), CoreId(1)).unwrap();
    assert!(segments.len() >= 4, "rolled: {segments:?}");
    let reader = LogReader::new(dir.path());
    for (i, r) in &refs {
        let v = reader.read(r).unwrap();
        if *i == 999 {
            assert!(v.payload().len() == 1 << 20 && v.payload().iter().all(|b| *b == 0x5A));
        } else {
            assert_eq!(v.payload(), &payload(*i)[..], "record {i}");
        }
    }
    let lsns: std::collections::BTreeSet<_> = refs.iter().map(|(_, r)| r.lsn).collect();
    assert_eq!(lsns.len(), refs.len(), "every record has its own Lsn");
    // Reopening after recovery continues after the last segment.
    let rec = recover(dir.path()).unwrap();
    assert!(rec.report.truncated.iter().all(|t| t.to_len <= t.from_len));
    let root = dir.path().to_path_buf();
    let last = refs.iter().map(|(_, r)| r.lsn).max().unwrap();
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    ex.run(async move {
        let log = LogWriter::open(&root, CoreId(1), LogConfig::default())
            .await
            .unwrap();
        let r = log
            .append(RecordSpec::blob(CheckpointId(3), owner(1)), b"again")
            .await
            .unwrap();
        assert!(r.lsn > last);
        log.close().await.unwrap();
    });
}
