//! Searches schedules. `XAAS_SIM_SCHEDULES=1000000` runs a longer soak;
//! `XAAS_SIM_SEED=<n>` runs one schedule and prints its trace.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use xaas_core::upload::Sabotage;
use xaas_dst::{HarnessSabotage, Scenario, Violation, run, run_traced};

/// Schedules `cargo test` searches by default.
const DEFAULT_SCHEDULES: u64 = 10_000;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs seeds `from..from + n` on every core; returns the violations found,
/// lowest seed first, and how many schedules ran.
fn search(from: u64, n: u64, tweak: impl Fn(&mut Scenario) + Sync, stop_at_first: bool) -> (Vec<Violation>, u64) {
    let next = Arc::new(AtomicU64::new(from));
    let found = Arc::new(Mutex::new(Vec::new()));
    let ran = Arc::new(AtomicU64::new(0));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (next, found, ran, tweak) = (next.clone(), found.clone(), ran.clone(), &tweak);
            s.spawn(move || {
                loop {
                    let seed = next.fetch_add(1, Ordering::SeqCst);
                    if seed >= from + n || (stop_at_first && !found.lock().unwrap().is_empty()) {
                        return;
                    }
                    let mut scenario = Scenario::from_seed(seed);
                    tweak(&mut scenario);
                    ran.fetch_add(1, Ordering::SeqCst);
                    if let Err(v) = run(&scenario) {
                        found.lock().unwrap().push(v);
                    }
                }
            });
        }
    });
    let mut found = Arc::try_unwrap(found).unwrap().into_inner().unwrap();
    found.sort_by_key(|v| v.seed);
    (found, ran.load(Ordering::SeqCst))
}

#[test]
fn every_schedule_keeps_every_invariant() {
    if let Some(seed) = env_u64("XAAS_SIM_SEED") {
        match run_traced(&Scenario::from_seed(seed)) {
            Ok(summary) => {
                for line in &summary.trace {
                    println!("{line}");
                }
                println!("seed {seed}: {} steps, every invariant held", summary.steps);
            }
            Err(v) => panic!("{v}"),
        }
        return;
    }
    let n = env_u64("XAAS_SIM_SCHEDULES").unwrap_or(DEFAULT_SCHEDULES);
    let (found, ran) = search(0, n, |_| {}, false);
    assert_eq!(ran, n);
    if let Some(first) = found.first() {
        for v in &found {
            eprintln!("seed {}: {}: {}", v.seed, v.invariant, v.detail);
        }
        let seeds: Vec<u64> = found.iter().map(|v| v.seed).take(20).collect();
        panic!("{} of {n} schedules broke an invariant (seeds {seeds:?}…); the first:\n{first}", found.len());
    }
}

#[test]
fn a_seed_gives_one_schedule() {
    for seed in [1, 77, 4242] {
        let a = run_traced(&Scenario::from_seed(seed)).map(|s| s.trace).unwrap_or_else(|v| v.trace);
        let b = run_traced(&Scenario::from_seed(seed)).map(|s| s.trace).unwrap_or_else(|v| v.trace);
        assert!(a.len() > 10, "seed {seed} did something");
        assert_eq!(a, b, "seed {seed} gave two different schedules");
    }
}

/// The first seed (of many tried) on which a broken machine breaks an
/// invariant; panics if none does.
fn caught(tweak: impl Fn(&mut Scenario) + Sync) -> Violation {
    let (found, ran) = search(0, 20_000, tweak, true);
    found.into_iter().next().unwrap_or_else(|| panic!("{ran} schedules ran and none broke an invariant"))
}

#[test]
fn a_machine_that_counts_a_request_after_sending_it_is_caught() {
    let v = caught(|s| s.sabotage = Sabotage { count_after_send: true, ..Sabotage::NONE });
    assert!(v.invariant.starts_with("2:") || v.invariant.starts_with("3:"), "{v}");
}

/// Defect 1 of the correctness issue: the uploader kept the first copy of a
/// page read twice and dropped the second by position, so a user between
/// the two copies' ends was in no batch, and reconciliation deactivated them.
#[test]
fn the_old_uploader_that_kept_one_copy_of_a_reread_page_is_caught() {
    let v = caught(|s| s.sabotage = Sabotage { ignore_copies: true, ..Sabotage::NONE });
    println!("{v}");
    assert!(v.invariant.starts_with('4') || v.invariant.starts_with('5'), "{v}");
}

/// Defect 2: a successor that received only finished batches of a loaded run
/// never finished it.
#[test]
fn the_old_uploader_that_finished_runs_only_from_settle_is_caught() {
    let v = caught(|s| s.sabotage = Sabotage { no_finish_at_takeover: true, ..Sabotage::NONE });
    println!("{v}");
    assert!(v.invariant.starts_with('6'), "{v}");
}

/// Defect 3: an uploader whose connection was closed went on acting, beside
/// the standby that took over.
#[test]
fn the_old_driver_that_went_on_after_losing_its_consumer_is_caught() {
    let v = caught(|s| s.harness = HarnessSabotage { no_fence: true });
    println!("{v}");
    assert!(matches!(v.invariant.as_bytes()[0], b'1' | b'2' | b'3'), "{v}");
}

/// The seeds on which the searches above first caught defects 1 to 3 of the
/// correctness issue: each breaks its invariant with the defect put back,
/// and keeps every invariant with the fix.
#[test]
fn the_seeds_of_defects_one_to_three_fail_without_the_fix_and_pass_with_it() {
    type Tweak = fn(&mut Scenario);
    let cases: [(u64, Tweak, char); 3] = [
        (4085, |s| s.sabotage.ignore_copies = true, '4'),
        (30, |s| s.sabotage.no_finish_at_takeover = true, '6'),
        (12, |s| s.harness.no_fence = true, '3'),
    ];
    for (seed, defect, invariant) in cases {
        let mut broken = Scenario::from_seed(seed);
        defect(&mut broken);
        let v = run(&broken).expect_err("the defect breaks an invariant on its seed");
        assert!(v.invariant.starts_with(invariant), "seed {seed}: {v}");
        if let Err(v) = run(&Scenario::from_seed(seed)) {
            panic!("seed {seed} breaks an invariant on the fixed machine:\n{v}");
        }
    }
}
