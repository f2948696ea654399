//! The linearizability checker reproduces the verdict of every labelled
//! Jepsen etcd history in `shared/testdata/jepsen-etcd/` (102 histories: 23
//! linearizable, 79 not), within budget and time; and the reference checker
//! (`todc_utils::WGLChecker`) agrees with ours on every one of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rast::check::history::Operation;
use rast::check::jepsen;
use rast::check::linearizable::{self, FailedCas, RegisterOp, RegisterSpec};
use rast::check::wgl::{Budget, Verdict};
use todc_utils::linearizability::WGLChecker;
use todc_utils::linearizability::history::{Action, History as TodcHistory};

/// The corpus lives beside the project checkout (as in CI).
fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/jepsen-etcd")
}

/// `(file name, linearizable?)` for every line of `labels.tsv`.
fn labels() -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(corpus().join("labels.tsv")).expect("labels.tsv");
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let (file, label) = line.split_once('\t').expect("file<TAB>label");
            let linearizable = match label.trim() {
                "linearizable" => true,
                "not-linearizable" => false,
                other => panic!("unknown label {other:?}"),
            };
            (file.to_owned(), linearizable)
        })
        .collect()
}

fn operations(file: &str) -> Vec<Operation<RegisterOp>> {
    let history =
        jepsen::read_file(&corpus().join(file)).unwrap_or_else(|error| panic!("{file}: {error}"));
    history.operations()
}

/// Every label is reproduced, with a deterministic step budget, and the
/// whole corpus takes well under the CI limit.
#[test]
fn all_labels_reproduced() {
    let labels = labels();
    assert_eq!(labels.len(), 102);
    let budget = Budget::steps(Budget::DEFAULT.steps_max);
    let started = Instant::now();
    let mut wrong = Vec::new();
    let (mut steps_max, mut slowest) = (0, (Duration::ZERO, String::new()));
    for (file, linearizable) in &labels {
        let operations = operations(file);
        let one = Instant::now();
        let search = linearizable::check_register(&operations, FailedCas::CompareMismatch, &budget);
        let elapsed = one.elapsed();
        steps_max = steps_max.max(search.steps);
        if elapsed > slowest.0 {
            slowest = (elapsed, file.clone());
        }
        let reproduced = match search.verdict {
            Verdict::Linearizable => *linearizable,
            Verdict::NotLinearizable(_) => !*linearizable,
            Verdict::Unknown(_) => false,
        };
        if !reproduced {
            wrong.push(format!(
                "{file}: label linearizable={linearizable}, got {:?}",
                search.verdict
            ));
        }
    }
    let total = started.elapsed();
    eprintln!(
        "jepsen etcd: {} histories in {total:?}; slowest {} in {:?}; most steps {steps_max}",
        labels.len(),
        slowest.1,
        slowest.0
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        steps_max < budget.steps_max / 10,
        "the default budget must keep a wide margin"
    );
    assert!(
        total < Duration::from_secs(20),
        "too slow for CI: {total:?}"
    );
}

/// The empty file of the corpus (a run where etcd never booted, unlabelled)
/// is an empty, linearizable history.
#[test]
fn empty_log_is_linearizable() {
    let operations = operations("etcd_095.log");
    assert!(operations.is_empty());
    let search =
        linearizable::check_register(&operations, FailedCas::CompareMismatch, &Budget::DEFAULT);
    assert_eq!(search.verdict, Verdict::Linearizable);
}

/// `todc_utils::WGLChecker` run on our specification agrees with our search
/// on every labelled history: two implementations of the algorithm, one
/// answer. Unknown-outcome operations get their response at the very end of
/// the history, which is equivalent to "any time after invoke, or never"
/// because our specification accepts them anywhere (as a no-op when they
/// cannot apply).
#[test]
fn reference_checker_agrees() {
    for (file, linearizable) in labels() {
        let operations = operations(&file);
        let (calls, _) = linearizable::register_calls(&operations, FailedCas::CompareMismatch);
        let mut events: Vec<(usize, bool, usize)> = Vec::new();
        for (index, call) in calls.iter().enumerate() {
            events.push((call.position_invoke, false, index));
            events.push((call.position_complete.unwrap_or(usize::MAX), true, index));
        }
        events.sort_unstable();
        let actions = events
            .iter()
            .map(|&(_, is_return, index)| {
                let op = calls[index].op;
                (
                    index,
                    if is_return {
                        Action::Response(op)
                    } else {
                        Action::Call(op)
                    },
                )
            })
            .collect();
        let verdict =
            WGLChecker::<RegisterSpec>::is_linearizable(TodcHistory::from_actions(actions));
        assert_eq!(verdict, linearizable, "{file}");
    }
}
