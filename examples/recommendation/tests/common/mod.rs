//! Fixtures shared by the recommendation job's integration tests: the binary, the CPUs a
//! test may use, a generated input, a naive reference computed from it (written here
//! again, apart from the job's code, so that the two can disagree), the job directory
//! and the committed output read back.
// Each test binary uses its own subset of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Output;

use rand::{Rng, SeedableRng};

/// The job's binary (the command line every job gets from `rill_engine::app`).
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_recommendation")
}

/// At most 2 of the CPUs this process may run on.
pub fn cpus() -> Vec<usize> {
    let mut v = rill_engine::config::available_cpus();
    v.truncate(2);
    v
}

/// One valid input event.
#[derive(Clone, Debug)]
pub struct Ev {
    pub ts: i64,
    pub user: String,
    pub item: String,
    pub click: bool,
}

/// A generated input: its valid events in input order and the byte offsets of its
/// malformed lines.
pub struct Input {
    pub events: Vec<Ev>,
    pub bad: Vec<u64>,
}

/// Writes `n` lines for `users` users over `items` items (`i0`, `i1`, …), with about
/// `malformed_percent`% malformed lines of several kinds; `odd_users` adds users whose
/// names need CSV quoting or are not ASCII.
pub fn write_input(
    path: &Path,
    n: usize,
    seed: u64,
    users: u32,
    items: u32,
    malformed_percent: u32,
    odd_users: bool,
) -> Input {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let (mut events, mut bad) = (Vec::new(), Vec::new());
    let mut offset = 0u64;
    let mut ts = 1_000_000i64;
    for _ in 0..n {
        ts += rng.gen_range(0..10);
        let user = match rng.gen_range(0..20) {
            0 if odd_users => "name, with \"comma\"".to_string(),
            1 if odd_users => "ünïcode-user".to_string(),
            _ => format!("u{}", rng.gen_range(0..users)),
        };
        // Users come back to a few items often (so clicks remove candidates and
        // histories repeat items).
        let item = if rng.gen_ratio(1, 2) {
            format!("i{}", rng.gen_range(0..items.min(20)))
        } else {
            format!("i{}", rng.gen_range(0..items))
        };
        let click = rng.gen_ratio(1, 4);
        let kind = if click { "click" } else { "view" };
        let line = if rng.gen_range(0..100) < malformed_percent {
            bad.push(offset);
            match rng.gen_range(0..6) {
                0 => "{not json".to_string(),
                1 => String::new(),
                2 => format!("{{\"ts\": {ts}, \"user\": \"{user}\", \"item\": \"{item}\"}}"),
                3 => format!(
                    "{{\"ts\": {ts}, \"user\": \"u1\", \"item\": \"{item}\", \"kind\": \"buy\"}}"
                ),
                4 => format!(
                    "{{\"ts\": \"{ts}\", \"user\": \"u1\", \"item\": \"{item}\", \"kind\": \"view\"}}"
                ),
                _ => format!(
                    "{{\"ts\": {ts}, \"user\": \"u1\", \"item\": \"{item};x\", \"kind\": \"view\"}}"
                ),
            }
        } else {
            events.push(Ev {
                ts,
                user: user.clone(),
                item: item.clone(),
                click,
            });
            serde_json::json!({"ts": ts, "user": user, "item": item, "kind": kind}).to_string()
        };
        writeln!(f, "{line}").unwrap();
        offset += line.len() as u64 + 1;
    }
    f.flush().unwrap();
    Input { events, bad }
}

/// The scoring parameters the reference needs.
#[derive(Clone, Copy, Debug)]
pub struct Knobs {
    pub history: usize,
    pub top_n: usize,
    pub every: u64,
    pub click_weight: u64,
    pub view_weight: u64,
    pub decay_permille: u64,
    pub categories: u64,
}

impl Default for Knobs {
    /// The job's defaults.
    fn default() -> Self {
        Self {
            history: 10,
            top_n: 3,
            every: 1,
            click_weight: 3,
            view_weight: 1,
            decay_permille: 800,
            categories: 8,
        }
    }
}

impl Knobs {
    /// As a `[params]` body (without input, out and dead-letter paths: the defaults).
    pub fn params(&self) -> String {
        format!(
            "history = {}\ntop_n = {}\nevery = {}\nclick_weight = {}\nview_weight = {}\n\
             decay_permille = {}\ncategories = {}\n",
            self.history,
            self.top_n,
            self.every,
            self.click_weight,
            self.view_weight,
            self.decay_permille,
            self.categories
        )
    }
}

/// One output row: (seq, ts, items).
pub type Row = (u64, i64, Vec<String>);
/// Each user's rows, in order.
pub type Rows = BTreeMap<String, Vec<Row>>;

/// FNV-1a over the item id: the simulated feature store's (category, popularity).
pub fn simulated(item: &str, categories: u64) -> (String, u64) {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in item.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    (format!("cat-{}", h % categories), 1 + (h >> 32) % 1000)
}

/// What the job must write for `events`, with `features` giving each item's
/// (category, popularity): for each user's every `every`-th event, the user's last
/// `history` events scored from scratch.
pub fn reference(events: &[Ev], k: &Knobs, features: &dyn Fn(&str) -> (String, u64)) -> Rows {
    let mut seen: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    let mut rows = Rows::new();
    for e in events {
        let all = seen.entry(&e.user).or_default();
        all.push(e);
        let seq = all.len() as u64;
        if seq % k.every != 0 {
            continue;
        }
        // Oldest first here; the weight of the event `a` steps back from the newest.
        let window = &all[all.len().saturating_sub(k.history)..];
        let mut weight = vec![0u64; window.len()];
        let mut f = 1_000_000u64;
        for a in 0..window.len() {
            weight[window.len() - 1 - a] = f;
            f = f * k.decay_permille / 1000;
        }
        let mut interest: BTreeMap<String, u128> = BTreeMap::new();
        for (ev, w) in window.iter().zip(&weight) {
            let kind = if ev.click {
                k.click_weight
            } else {
                k.view_weight
            };
            *interest.entry(features(&ev.item).0).or_default() += u128::from(kind * w);
        }
        let mut candidates: Vec<(u128, String)> = Vec::new();
        for ev in window {
            let clicked = window.iter().any(|x| x.click && x.item == ev.item);
            if clicked || candidates.iter().any(|c| c.1 == ev.item) {
                continue;
            }
            let (cat, pop) = features(&ev.item);
            candidates.push((interest[&cat] * u128::from(pop), ev.item.clone()));
        }
        candidates.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.as_bytes().cmp(b.1.as_bytes())));
        let items = candidates.into_iter().take(k.top_n).map(|c| c.1).collect();
        rows.entry(e.user.clone())
            .or_default()
            .push((seq, e.ts, items));
    }
    rows
}

/// A job directory for the recommendation job on `cores` (empty core files): `params`
/// in its `[params]`, then `extra` (other tables).
pub fn job_dir(dir: &Path, cores: &[usize], params: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("cores")).unwrap();
    for e in std::fs::read_dir(dir.join("cores")).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    for c in cores {
        std::fs::write(dir.join("cores").join(format!("{c}.toml")), "").unwrap();
    }
    std::fs::write(
        dir.join("job.toml"),
        format!("pipeline = \"recommendation\"\n{extra}\n[params]\n{params}\n"),
    )
    .unwrap();
}

/// Splits one output line into its four CSV fields (the user may be quoted).
pub fn fields(line: &str) -> (String, &str) {
    if let Some(rest) = line.strip_prefix('"') {
        let mut user = String::new();
        let mut chars = rest.char_indices();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if rest[i + 1..].starts_with('"') {
                    user.push('"');
                    chars.next();
                } else {
                    let tail = &rest[i + 1..];
                    return (
                        user,
                        tail.strip_prefix(',').expect("a comma after the user"),
                    );
                }
            } else {
                user.push(c);
            }
        }
        panic!("unterminated quoted user in {line:?}");
    }
    let (user, tail) = line.split_once(',').expect("4 fields");
    (user.to_string(), tail)
}

/// One output line as (user, row).
pub fn parse_row(line: &str) -> (String, Row) {
    let (user, tail) = fields(line);
    let mut f = tail.splitn(3, ',');
    let seq = f.next().unwrap().parse().unwrap();
    let ts = f.next().unwrap().parse().unwrap();
    let items = f.next().expect("4 fields");
    let items = if items.is_empty() {
        Vec::new()
    } else {
        items.split(';').map(str::to_string).collect()
    };
    (user, (seq, ts, items))
}

/// The committed output: each user's rows in the order the committed files hold them
/// (by checkpoint, then partition).
pub fn committed(dir: &Path) -> Rows {
    let mut got = Rows::new();
    for f in rill_engine::connectors::committed_files(&dir.join("out")).unwrap() {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let (user, row) = parse_row(line);
            got.entry(user).or_default().push(row);
        }
    }
    got
}

/// Compares `got` with `want` user by user, naming the first difference.
pub fn assert_rows_eq(got: &Rows, want: &Rows, what: &str) {
    for (user, w) in want {
        let g = got.get(user).map(Vec::as_slice).unwrap_or_default();
        if g != w.as_slice() {
            let i = (0..w.len().min(g.len()))
                .find(|&i| w[i] != g[i])
                .unwrap_or(w.len().min(g.len()));
            panic!(
                "{what}: rows of {user:?} differ at row {i}: want {:?}, got {:?} \
                 ({} wanted, {} committed)",
                w.get(i),
                g.get(i),
                w.len(),
                g.len()
            );
        }
    }
    let extra: Vec<_> = got.keys().filter(|u| !want.contains_key(*u)).collect();
    assert!(extra.is_empty(), "{what}: unexpected users {extra:?}");
}

/// A run's exit status, stderr and stdout, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "exit {}\n--- stderr\n{}\n--- stdout\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}
