//! The linearizability checker reproduces the verdict of every labelled
//! Jepsen etcd history in `testdata/jepsen-etcd/` (102 histories: 23
//! linearizable, 79 not), within budget and time; and the reference checker
//! (`todc_utils::WGLChecker`) agrees with ours on every one of them.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rast::check::history::Operation;
use rast::check::jepsen;
use rast::check::linearizable::{self, FailedCas, RegisterOp, RegisterSpec};
use rast::check::wgl::{Budget, Verdict};
use todc_utils::linearizability::WGLChecker;

/// The corpus ships with the repository (see its README for its origin).
fn corpus() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/jepsen-etcd")
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

/// Checks every labelled history with `failed_cas`; asserts each label is
/// reproduced within a tenth of the default steps and the whole corpus in
/// well under the CI limit.
fn reproduce_labels(failed_cas: FailedCas) {
    let labels = labels();
    assert_eq!(labels.len(), 102);
    let started = Instant::now();
    let histories: Vec<_> = labels.iter().map(|(file, _)| operations(file)).collect();
    let parsed = started.elapsed();
    let budget = Budget::steps(Budget::DEFAULT.steps_max);
    let mut wrong = Vec::new();
    let (mut steps_max, mut slowest) = (0, (Duration::ZERO, ""));
    for ((file, linearizable), operations) in labels.iter().zip(&histories) {
        let one = Instant::now();
        let search = linearizable::check_register(operations, failed_cas, &budget);
        let elapsed = one.elapsed();
        steps_max = steps_max.max(search.steps);
        if elapsed > slowest.0 {
            slowest = (elapsed, file);
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
        "jepsen etcd ({failed_cas:?}): {} histories parsed in {parsed:?}, checked in {:?}; \
         slowest {} in {:?}; most steps {steps_max}",
        labels.len(),
        total.saturating_sub(parsed),
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

/// Every label is reproduced when a failed cas is read as Jepsen's etcd
/// client means it: the compare did not match.
#[test]
fn labels_reproduced_failed_cas_is_mismatch() {
    reproduce_labels(FailedCas::CompareMismatch);
}

/// Every label is also reproduced when a failed cas is simply dropped
/// (Knossos's reading): the corpus does not tell the two apart.
#[test]
fn labels_reproduced_failed_cas_no_effect() {
    reproduce_labels(FailedCas::NoEffect);
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
        for failed_cas in [FailedCas::CompareMismatch, FailedCas::NoEffect] {
            let (calls, _) = linearizable::register_calls(&operations, failed_cas);
            let verdict = WGLChecker::<RegisterSpec>::is_linearizable(
                linearizable::reference_history(&calls),
            );
            assert_eq!(verdict, linearizable, "{file} {failed_cas:?}");
        }
    }
}
