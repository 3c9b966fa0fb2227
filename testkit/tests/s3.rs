//! The S3 fixture and `rill_storage::Remote` against a real SeaweedFS on loopback:
//! conditional writes are enforced, a checkpoint goes up (only the bytes not there yet)
//! and comes back into an empty directory where it validates and reads, and of two
//! concurrent publishers of a global manifest exactly one wins.

use std::sync::{Arc, Barrier};

use rill_storage::{
    archive_delta, archive_full, recover, ChainView, CheckpointId, CheckpointStore, CoreId,
    GlobalOutcome, KeyGroupRange, LogConfig, LogWriter, Manifest, OperatorId, Owner, PartitionId,
};
use rill_testkit::S3;

#[test]
fn a_second_create_of_the_same_key_fails() {
    let s3 = S3::start();
    let r = s3.remote("cond").unwrap();
    assert!(r.put_if_absent("k", b"first".to_vec()).unwrap());
    assert!(
        !r.put_if_absent("k", b"second".to_vec()).unwrap(),
        "If-None-Match: * was not enforced: the second create replaced the object"
    );
    assert_eq!(r.get("k").unwrap().as_deref(), Some(&b"first"[..]));
    assert_eq!(r.get("absent").unwrap(), None);
    // Another prefix is another key.
    assert!(s3
        .remote("cond2")
        .unwrap()
        .put_if_absent("k", b"x".to_vec())
        .unwrap());
}

#[test]
fn two_servers_run_side_by_side() {
    let a = S3::start();
    let b = S3::start();
    assert_ne!(a.endpoint, b.endpoint);
    assert!(a
        .remote("p")
        .unwrap()
        .put_if_absent("k", b"a".to_vec())
        .unwrap());
    assert!(b
        .remote("p")
        .unwrap()
        .put_if_absent("k", b"b".to_vec())
        .unwrap());
}

#[test]
fn wrong_credentials_are_refused() {
    let s3 = S3::start();
    let r = rill_storage::Remote::open_with(
        &s3.url("x"),
        [
            ("aws_endpoint", s3.endpoint.clone()),
            ("aws_access_key_id", S3::ACCESS_KEY.to_string()),
            ("aws_secret_access_key", "wrong".to_string()),
        ],
    )
    .unwrap();
    let e = r.put_if_absent("k", b"x".to_vec()).unwrap_err();
    assert!(matches!(e, rill_storage::Error::Remote { .. }), "{e}");
}

fn owner() -> Owner {
    Owner::new(OperatorId(1), PartitionId(0), KeyGroupRange::new(0, 64))
}

/// Writes checkpoint 1 (a full snapshot of 0..n) and checkpoint 2 (a delta: key 7 -> 70,
/// key 8 deleted) into the log under `root`; returns their manifests.
fn write_two_checkpoints(root: &std::path::Path, n: u64) -> (Manifest, Manifest) {
    write_checkpoints(root, n, 1)
}

/// [`write_two_checkpoints`] as checkpoints `first` and `first + 1`.
fn write_checkpoints(root: &std::path::Path, n: u64, first: u64) -> (Manifest, Manifest) {
    let ex = glommio::LocalExecutorBuilder::default().make().unwrap();
    let root = root.to_path_buf();
    let (r1, r2) = ex.run(async move {
        let cfg = LogConfig {
            segment_bytes: 64 << 10,
            ..LogConfig::default()
        };
        let log = LogWriter::open(&root, CoreId(0), cfg).await.unwrap();
        let mut state: Vec<(u64, u64)> = (0..n).map(|k| (k, k * 2)).collect();
        let full = archive_full(&mut state).unwrap();
        let r1 = log
            .append_full(CheckpointId(first), owner(), &full)
            .await
            .unwrap();
        let delta = archive_delta(&mut vec![(7u64, 70u64)], &mut vec![8u64]).unwrap();
        let r2 = log
            .append_delta(
                CheckpointId(first + 1),
                CheckpointId(first),
                owner(),
                &delta,
            )
            .await
            .unwrap();
        log.close().await.unwrap();
        (r1, r2)
    });
    let m1 = Manifest::new(CheckpointId(first), vec![r1], b"one".to_vec());
    let m2 = Manifest::new(CheckpointId(first + 1), vec![r1, r2], b"two".to_vec());
    (m1, m2)
}

#[test]
fn a_checkpoint_goes_up_in_pieces_and_comes_back_into_an_empty_directory() {
    let s3 = S3::start();
    let local = tempfile::tempdir().unwrap();
    // 20000 entries: more than one 64 KiB segment, so the chain spans segments.
    let (m1, m2) = write_two_checkpoints(local.path(), 20_000);
    let store = CheckpointStore::new(local.path());
    store.publish(&m1).unwrap();
    store.publish(&m2).unwrap();

    let mut up = s3.remote("job").unwrap();
    let sent1 = up.upload_checkpoint(local.path(), &m1).unwrap();
    let sent2 = up.upload_checkpoint(local.path(), &m2).unwrap();
    assert!(sent1 > 0);
    // Checkpoint 2 needs checkpoint 1's record too, but that is in the store already:
    // only the delta's bytes go up.
    assert!(
        sent2 < sent1 / 10,
        "checkpoint 2 sent {sent2} bytes, checkpoint 1 {sent1}: the base went up again"
    );
    assert_eq!(
        up.list_manifests().unwrap(),
        vec![CheckpointId(1), CheckpointId(2)]
    );
    // Uploading again sends nothing (every byte is there) and rewrites only the manifest.
    assert_eq!(up.upload_checkpoint(local.path(), &m2).unwrap(), 0);

    // A fresh process with an empty local directory.
    let empty = tempfile::tempdir().unwrap();
    let mut down = s3.remote("job").unwrap();
    let got = down
        .download_checkpoint(empty.path(), CheckpointId(2))
        .unwrap()
        .expect("checkpoint 2 is in the store");
    assert!(got >= sent1 + sent2 - 4096, "downloaded {got} bytes");
    assert_eq!(
        down.download_checkpoint(empty.path(), CheckpointId(9))
            .unwrap(),
        None
    );
    let recovered = recover(empty.path()).unwrap();
    let cp = recovered.checkpoint.expect("checkpoint 2 validates");
    assert_eq!(cp.id(), CheckpointId(2));
    assert_eq!(cp.metadata(), b"two");
    let chain = ChainView::<u64, u64>::open(cp.chain(&owner()).unwrap()).unwrap();
    assert_eq!(chain.get(&7u64).map(|v| v.to_native()), Some(70));
    assert_eq!(chain.get(&8u64), None);
    assert_eq!(chain.get(&19_999u64).map(|v| v.to_native()), Some(39_998));

    // A corrupted piece in the store is caught by the usual validation after download.
    let other = tempfile::tempdir().unwrap();
    let (m1b, _) = write_two_checkpoints(other.path(), 100);
    CheckpointStore::new(other.path()).publish(&m1b).unwrap();
    let mut up2 = s3.remote("corrupt").unwrap();
    up2.upload_checkpoint(other.path(), &m1b).unwrap();
    let seg = format!("core-0/{:020}.seg", m1b.records[0].segment.0);
    let r = s3.remote("corrupt").unwrap();
    let piece_end = m1b.records[0].lsn.0 - m1b.records[0].segment.0 + m1b.records[0].len;
    let piece = format!("{seg}/{:020}-{piece_end:020}", 0);
    let mut bytes = r.get(&piece).unwrap().expect("the piece is there");
    let last = bytes.len() - 1;
    bytes[last / 2] ^= 0x40;
    // Not a create: replace it (a bit flip at rest).
    r.delete(&piece).unwrap();
    assert!(r.put_if_absent(&piece, bytes).unwrap());
    let again = tempfile::tempdir().unwrap();
    s3.remote("corrupt")
        .unwrap()
        .download_checkpoint(again.path(), CheckpointId(1))
        .unwrap()
        .unwrap();
    let rec = recover(again.path()).unwrap();
    assert!(rec.checkpoint.is_none(), "a flipped bit went unnoticed");
    assert_eq!(rec.report.skipped.len(), 1);
}

#[test]
fn of_two_concurrent_global_publishers_exactly_one_wins() {
    let s3 = S3::start();
    let procs: Vec<String> = vec!["process-0".into(), "process-1".into()];
    let job = s3.remote("job").unwrap();
    for round in 1..=8u64 {
        let n = CheckpointId(round);
        let m = Manifest::new(n, Vec::new(), Vec::new()).encode();
        let rel = |p: &str| format!("{p}/manifests/{:020}.manifest", n.0);
        job.put_if_absent(&rel("process-0"), m.clone()).unwrap();
        // Not every process's manifest is there: nothing is published.
        assert_eq!(
            job.publish_global(n, &procs).unwrap(),
            GlobalOutcome::Missing(vec!["process-1".into()])
        );
        assert_eq!(job.load_global(n).unwrap(), None);
        job.put_if_absent(&rel("process-1"), m).unwrap();

        let barrier = Arc::new(Barrier::new(2));
        let outcomes: Vec<GlobalOutcome> = (0..2)
            .map(|_| {
                let remote = s3.remote("job").unwrap();
                let procs = procs.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    remote.publish_global(n, &procs).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect();
        let won = outcomes
            .iter()
            .filter(|o| **o == GlobalOutcome::Won)
            .count();
        let lost = outcomes
            .iter()
            .filter(|o| **o == GlobalOutcome::Lost)
            .count();
        assert_eq!((won, lost), (1, 1), "round {round}: {outcomes:?}");
        let g = job.load_global(n).unwrap().expect("published");
        assert_eq!(g.checkpoint, n);
        let names: Vec<&str> = g.processes.iter().map(|p| p.prefix.as_str()).collect();
        assert_eq!(names, ["process-0", "process-1"]);
        // A late publisher loses too.
        assert_eq!(job.publish_global(n, &procs).unwrap(), GlobalOutcome::Lost);
    }
}

/// A publish and an abort of the same checkpoint race for one key: exactly one decides,
/// and every later call (publish or abort) reads that decision. Fails if either write
/// were unconditional.
#[test]
fn a_global_publish_and_abort_racing_agree_on_one_decision() {
    let s3 = S3::start();
    let procs: Vec<String> = vec!["process-0".into(), "process-1".into()];
    let job = s3.remote("job").unwrap();
    let mut decided = (0, 0);
    for round in 1..=12u64 {
        let n = CheckpointId(round);
        let m = Manifest::new(n, Vec::new(), Vec::new()).encode();
        for p in &procs {
            job.put_if_absent(&format!("{p}/manifests/{:020}.manifest", n.0), m.clone())
                .unwrap();
        }
        let barrier = Arc::new(Barrier::new(2));
        let (b1, r1, p1) = (barrier.clone(), s3.remote("job").unwrap(), procs.clone());
        let publisher = std::thread::spawn(move || {
            b1.wait();
            r1.publish_global(n, &p1).unwrap()
        });
        let (b2, r2) = (barrier.clone(), s3.remote("job").unwrap());
        let aborter = std::thread::spawn(move || {
            b2.wait();
            r2.abort_global(n, "process 1 restarted").unwrap()
        });
        let (published, aborted) = (publisher.join().unwrap(), aborter.join().unwrap());
        let g = job.load_global(n).unwrap().expect("decided");
        if g.is_complete() {
            decided.0 += 1;
            assert_eq!(published, GlobalOutcome::Won, "round {round}");
            assert_eq!(
                aborted.as_ref(),
                Some(&g),
                "round {round}: the abort sees it complete"
            );
            assert_eq!(job.publish_global(n, &procs).unwrap(), GlobalOutcome::Lost);
        } else {
            decided.1 += 1;
            assert_eq!(aborted, None, "round {round}");
            let why = "process 1 restarted".to_string();
            assert_eq!(
                published,
                GlobalOutcome::Aborted(why.clone()),
                "round {round}"
            );
            assert_eq!(g.aborted, Some(why.clone()));
            assert_eq!(
                job.publish_global(n, &procs).unwrap(),
                GlobalOutcome::Aborted(why)
            );
        }
        assert_eq!(
            job.abort_global(n, "again").unwrap().is_some(),
            g.is_complete()
        );
    }
    eprintln!("complete {}, aborted {}", decided.0, decided.1);
    // Without a race, in both orders.
    let m = |n: u64| Manifest::new(CheckpointId(n), Vec::new(), Vec::new()).encode();
    for n in [13u64, 14] {
        for p in &procs {
            job.put_if_absent(&format!("{p}/manifests/{n:020}.manifest"), m(n))
                .unwrap();
        }
    }
    assert_eq!(
        job.publish_global(CheckpointId(13), &procs).unwrap(),
        GlobalOutcome::Won
    );
    assert!(job
        .abort_global(CheckpointId(13), "late")
        .unwrap()
        .is_some_and(|g| g.is_complete()));
    assert_eq!(job.abort_global(CheckpointId(14), "first").unwrap(), None);
    assert_eq!(
        job.publish_global(CheckpointId(14), &procs).unwrap(),
        GlobalOutcome::Aborted("first".into())
    );
    assert_eq!(
        job.newest_complete_global(None).unwrap(),
        Some(CheckpointId(13))
    );
    assert_eq!(
        job.newest_complete_global(Some(CheckpointId(12))).unwrap(),
        (1..=12u64).rev().map(CheckpointId).find(|n| job
            .load_global(*n)
            .unwrap()
            .unwrap()
            .is_complete())
    );
    assert_eq!(
        job.list_globals().unwrap(),
        (1..=14).map(CheckpointId).collect::<Vec<_>>()
    );
}

#[test]
fn at_start_a_local_manifest_missing_from_the_store_is_dropped() {
    use rill_engine::checkpoint::remote::prepare;
    use rill_engine::checkpoint::restore::StartFrom;
    let s3 = S3::start();
    let local = tempfile::tempdir().unwrap();
    let (m1, m2) = write_two_checkpoints(local.path(), 1000);
    let store = CheckpointStore::new(local.path());
    store.publish(&m1).unwrap();
    store.publish(&m2).unwrap();
    // Checkpoint 2 was published locally, then the process died before its upload.
    s3.remote("p")
        .unwrap()
        .upload_checkpoint(local.path(), &m1)
        .unwrap();

    let mut r = s3.remote("p").unwrap();
    let p = prepare(&mut r, local.path(), StartFrom::Newest, |w| panic!("{w}")).unwrap();
    assert_eq!(p.dropped_local, vec![rill_engine::ids::CheckpointId(2)]);
    assert_eq!(p.newest_in_store, Some(rill_engine::ids::CheckpointId(1)));
    assert!(p.downloaded.is_none(), "checkpoint 1 is local already");
    let recovered = recover(local.path()).unwrap();
    assert_eq!(recovered.checkpoint.unwrap().id(), CheckpointId(1));
    // Asked for by id, it is not there either.
    let asked = rill_engine::ids::CheckpointId(2);
    let e = prepare(&mut r, local.path(), StartFrom::Id(asked), |_| {}).unwrap_err();
    assert!(
        e.to_string().contains("not in s3://rill/p/manifests/"),
        "{e}"
    );

    // The same with the local directory gone: checkpoint 1 comes down.
    let empty = tempfile::tempdir().unwrap();
    let p = prepare(&mut r, empty.path(), StartFrom::Newest, |w| panic!("{w}")).unwrap();
    assert_eq!(
        p.downloaded.map(|d| d.0),
        Some(rill_engine::ids::CheckpointId(1))
    );
    assert_eq!(
        recover(empty.path()).unwrap().checkpoint.unwrap().id(),
        CheckpointId(1)
    );
}

#[test]
fn a_fresh_start_never_writes_a_segment_under_a_name_the_store_has() {
    use rill_engine::checkpoint::remote::prepare;
    use rill_engine::checkpoint::restore::StartFrom;
    let s3 = S3::start();
    let a = tempfile::tempdir().unwrap();
    let (m1, m2) = write_checkpoints(a.path(), 1000, 1);
    let mut up = s3.remote("f").unwrap();
    for m in [&m1, &m2] {
        CheckpointStore::new(a.path()).publish(m).unwrap();
        up.upload_checkpoint(a.path(), m).unwrap();
    }
    // Another machine, an empty local directory, `--fresh`: a new log.
    let b = tempfile::tempdir().unwrap();
    prepare(
        &mut s3.remote("f").unwrap(),
        b.path(),
        StartFrom::Fresh,
        |w| panic!("{w}"),
    )
    .unwrap();
    let (m3, m4) = write_checkpoints(b.path(), 500, 3);
    assert!(
        m3.records[0].segment > m2.records.last().unwrap().segment,
        "the new log reuses a segment name of the store's"
    );
    let mut up = s3.remote("f").unwrap();
    for m in [&m3, &m4] {
        CheckpointStore::new(b.path()).publish(m).unwrap();
        up.upload_checkpoint(b.path(), m).unwrap();
    }
    // A third machine restores the newest: the second log's checkpoint, intact.
    let c = tempfile::tempdir().unwrap();
    let p = prepare(
        &mut s3.remote("f").unwrap(),
        c.path(),
        StartFrom::Newest,
        |w| panic!("{w}"),
    )
    .unwrap();
    assert_eq!(
        p.downloaded.map(|d| d.0),
        Some(rill_engine::ids::CheckpointId(4))
    );
    let cp = recover(c.path()).unwrap().checkpoint.unwrap();
    assert_eq!(cp.id(), CheckpointId(4));
    let chain = ChainView::<u64, u64>::open(cp.chain(&owner()).unwrap()).unwrap();
    assert_eq!(chain.get(&499u64).map(|v| v.to_native()), Some(998));
    assert_eq!(chain.get(&500u64), None);
}

/// A process of a job of several processes restarting: its own checkpoint 5 in the store
/// has no global decision (it died before the global manifest), so it aborts 5 for the
/// job; checkpoint 4 was aborted, 3 is complete: it restores 3 (downloaded, its local
/// copy of 5 removed) and numbers new checkpoints after 5. Fails if the start restored
/// its own newest checkpoint or left 5 undecided.
#[test]
fn a_restarting_process_aborts_its_undecided_checkpoints_and_restores_the_newest_global_one() {
    use rill_engine::checkpoint::remote::prepare_global;
    use rill_engine::checkpoint::restore::StartFrom;
    use rill_engine::ids::{CheckpointId as Id, Process};
    let s3 = S3::start();
    let me = Process { index: 1, count: 2 };
    let procs = me.all_prefixes();
    let job = s3.remote("job").unwrap();
    let m = |n: u64| Manifest::new(CheckpointId(n), Vec::new(), Vec::new());
    for n in 3..=5u64 {
        for p in &procs {
            if n == 5 && p == "process-0-of-2" {
                continue; // process 0 had not finished 5
            }
            job.put_if_absent(&format!("{p}/manifests/{n:020}.manifest"), m(n).encode())
                .unwrap();
        }
    }
    assert_eq!(
        job.publish_global(CheckpointId(3), &procs).unwrap(),
        GlobalOutcome::Won
    );
    assert_eq!(job.abort_global(CheckpointId(4), "expired").unwrap(), None);
    let local = tempfile::tempdir().unwrap();
    rill_storage::manifest::publish(local.path(), &m(5)).unwrap();

    let mut own = s3.remote("job/process-1-of-2").unwrap();
    let p = prepare_global(&mut own, &job, me, local.path(), StartFrom::Newest).unwrap();
    assert_eq!(p.restore, Some(Id(3)));
    assert_eq!(p.aborted, vec![Id(5)]);
    assert_eq!(p.newest_used, Some(Id(5)));
    assert_eq!(p.dropped_local, vec![Id(5)]);
    assert_eq!(p.downloaded.map(|d| d.0), Some(Id(3)));
    assert_eq!(
        rill_storage::layout::list_manifests(local.path()).unwrap(),
        vec![CheckpointId(3)]
    );
    let g5 = job.load_global(CheckpointId(5)).unwrap().expect("decided");
    assert!(!g5.is_complete(), "5 aborted for the job: {g5:?}");
    // Process 0 finishing 5 now cannot complete it.
    job.put_if_absent(
        &format!("process-0-of-2/manifests/{:020}.manifest", 5),
        m(5).encode(),
    )
    .unwrap();
    assert!(matches!(
        job.publish_global(CheckpointId(5), &procs).unwrap(),
        GlobalOutcome::Aborted(_)
    ));
    // Asked for an aborted checkpoint by id: refused, naming the global manifest.
    let e = prepare_global(&mut own, &job, me, local.path(), StartFrom::Id(Id(4))).unwrap_err();
    assert!(
        e.to_string().contains("not complete for the whole job"),
        "{e}"
    );
}
