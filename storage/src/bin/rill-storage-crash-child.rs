//! Child process of the storage crash test (`tests/crash.rs`): recovers the checkpoint
//! directory given as its first argument, then writes checkpoints forever on two core logs
//! (full snapshots every fourth checkpoint, deltas in between, a large blob now and then),
//! publishing each manifest and printing `COMPLETE <id>` after it, until it is killed.
//! Not part of the library; exists only to be SIGKILLed.

use rill_storage::testing::{model_changes, model_owner, MODEL_OWNERS};
use rill_storage::*;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

const OWNERS: u32 = MODEL_OWNERS;

type BoxError = Box<dyn std::error::Error>;

fn main() -> Result<(), BoxError> {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: crash-child DIR"));
    let recovered = recover(&root)?;
    let mut states: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new(); OWNERS as usize];
    let mut chains: Vec<Vec<RecordRef>> = vec![Vec::new(); OWNERS as usize];
    let mut next = CheckpointId(1);
    if let Some(c) = &recovered.checkpoint {
        next = CheckpointId(c.id().0 + 1);
        let chain_refs = c.manifest().chains()?;
        for i in 0..OWNERS {
            let view = ChainView::<u64, u64>::open(
                c.chain(&model_owner(i)).expect("every owner has state"),
            )?;
            states[i as usize] = view.fold()?.into_iter().collect();
            chains[i as usize] = chain_refs[&model_owner(i)].clone();
        }
    }
    eprintln!(
        "child: resuming at {next}, report {:?}",
        recovered.report.newest_complete
    );
    let store = recovered.store;
    let ex = glommio::LocalExecutorBuilder::default().make()?;
    ex.run(async move {
        let cfg = LogConfig {
            segment_bytes: 256 << 10,
            ..LogConfig::default()
        };
        let logs = std::rc::Rc::new([
            LogWriter::open(&root, CoreId(0), cfg.clone()).await?,
            LogWriter::open(&root, CoreId(1), cfg).await?,
        ]);
        let mut stdout = std::io::stdout();
        loop {
            let n = next;
            let mut appends = Vec::new();
            for i in 0..OWNERS {
                let (mut ups, mut dels) = model_changes(i, n.0);
                let state = &mut states[i as usize];
                for k in &dels {
                    state.remove(k);
                }
                state.extend(ups.iter().copied());
                let full = n.0 % 4 == 1 || chains[i as usize].is_empty();
                let logs = logs.clone();
                let bytes = if full {
                    archive_full(&mut state.iter().map(|(k, v)| (*k, *v)).collect())?
                } else {
                    archive_delta(&mut ups, &mut dels)?
                };
                let base = chains[i as usize]
                    .first()
                    .map(|r| r.checkpoint)
                    .unwrap_or(n);
                // One task per record: appends on the same core share writes and fsyncs.
                appends.push(glommio::spawn_local(async move {
                    let spec = if full {
                        RecordSpec::full(n, model_owner(i))
                    } else {
                        RecordSpec::delta(n, base, model_owner(i))
                    };
                    logs[(i % 2) as usize]
                        .append(spec, &bytes)
                        .await
                        .map(|r| (i, full, r))
                }));
            }
            let mut blobs = Vec::new();
            if n.0 % 3 == 0 {
                let blob = vec![n.0 as u8; 300 << 10];
                blobs.push(
                    logs[0]
                        .append(RecordSpec::blob(n, model_owner(0)), &blob)
                        .await?,
                );
            }
            let mut results = Vec::new();
            for a in appends {
                results.push(a.await?);
            }
            for (i, full, r) in results {
                if full {
                    chains[i as usize].clear();
                }
                chains[i as usize].push(r);
            }
            let records = chains.iter().flatten().chain(&blobs).copied().collect();
            store.publish(&Manifest::new(n, records, n.0.to_le_bytes().to_vec()))?;
            writeln!(stdout, "COMPLETE {}", n.0)?;
            stdout.flush()?;
            if n.0 % 2 == 0 {
                store.retain(3, &Default::default())?; // nothing else is in flight
            }
            next = CheckpointId(n.0 + 1);
        }
        #[allow(unreachable_code)]
        Ok::<(), BoxError>(())
    })
}
