//! The Wing–Gong–Lowe linearizability search, bounded.
//!
//! A history is linearizable if every operation can be given a point in
//! time, between its invocation and its completion, such that applying the
//! operations one by one in the order of their points, to the sequential
//! specification, gives every result the clients saw. An operation whose
//! outcome is unknown may be given a point anywhere after its invocation,
//! or none at all.
//!
//! The search (Wing & Gong 1993, with Lowe's 2017 memoization; the same
//! algorithm as `todc_utils::WGLChecker` and porcupine) walks the events in
//! real-time order, kept in a doubly linked list:
//!
//! ```text
//!  head ⇄ call a ⇄ call b ⇄ return a ⇄ call c ⇄ return b ⇄ ... ⇄ tail
//! ```
//!
//! At a *call* it tries to linearize that operation now: apply it to the
//! state; if the specification accepts it and the pair (set of linearized
//! operations, new state) was never seen before, the call and its return
//! are unlinked ("lifted"), pushed on a stack, and the walk restarts at the
//! head. At a *return* of an operation not yet linearized, the operation's
//! window has closed: pop the last choice, relink it (dancing links: relink
//! in reverse order of unlinking) and try the next call after it. An empty
//! stack at that point means no order works. Success is when no return is
//! left: every completed operation is linearized; operations with unknown
//! outcome have no return entry, so they may stay unlinearized (never took
//! effect).
//!
//! The cache of (linearized set, state) is what makes the search practical:
//! two orders of the same operations that reach the same state have the same
//! future. It is also what costs memory, so the search is bounded by a
//! [`Budget`] of steps, estimated cache bytes and wall time, and answers
//! [`Verdict::Unknown`] when it runs out rather than hanging a simulator run.
//!
//! Two prunings on top (see [`check`]), each proven sound in its doc and
//! checked against the reference on random histories
//! (tests/linearizable_reference.rs): read-only operations are linearized
//! greedily, and identical unknown-outcome operations are tried in
//! invocation order only. On the Jepsen etcd corpus they cut the hardest
//! history (etcd_002) from 1.36 M steps to 0.42 M.
//!
//! Why not call `todc_utils::WGLChecker` directly: it cannot be bounded (no
//! step or time limit, and a thread cannot be killed), its history is a
//! `Vec` searched and shifted linearly on every step, it clones a
//! `Vec<bool>` per attempt, and its `History` panics on an empty or
//! incomplete history. It gets the corpus right, in about 2 s where this
//! search takes about 0.2 s. It stays the reference: our specifications
//! implement its `Specification` trait and the tests run both.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use todc_utils::Specification;

/// What a specification can tell the search beyond
/// `todc_utils::Specification`, to prune it. Both default to "nothing
/// known", which is always sound.
pub trait Hints: Specification {
    /// Whether `op` never changes the state wherever it is valid (a read, an
    /// observation). The search then linearizes it as soon as it is valid
    /// and never tries it later: moving such an operation earlier, to a
    /// point after its invocation where it is valid, changes no other
    /// result, so if no linearization puts it here, none exists.
    fn is_read_only(op: &Self::Operation) -> bool {
        let _ = op;
        false
    }

    /// Bytes `state` holds, heap included, for the memory budget.
    fn state_bytes(state: &Self::State) -> usize {
        std::mem::size_of_val(state)
    }
}

/// How many earlier unknown-outcome calls are compared with each one when
/// looking for its twin.
const TWIN_LOOKBACK_MAX: usize = 1024;

/// Memory a cache entry costs besides its bitset and state: the hash
/// table's slot and control byte, the bitset's box and allocator rounding.
const CACHE_ENTRY_OVERHEAD_BYTES: usize = 48;

/// Steps between two looks at the clock.
const STEPS_PER_CLOCK_CHECK: u64 = 4096;

/// How much work a search may do before it gives up with
/// [`Verdict::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Most search steps (attempts to linearize an operation, plus
    /// backtracks). Memory grows with steps: at most one cache entry each.
    pub steps_max: u64,
    /// Most bytes the cache may hold (estimated: bitset, state and a fixed
    /// overhead per entry).
    pub cache_bytes_max: usize,
    /// Most wall time, if any.
    pub time_max: Option<Duration>,
}

impl Budget {
    /// A budget fit for tests and simulation runs: the hardest Jepsen etcd
    /// history needs under a tenth of its steps (tests/jepsen_etcd.rs); a
    /// history that needs more is too big to judge exactly: split it, or use
    /// the specific checkers ([`super::log`]).
    pub const DEFAULT: Self = Self {
        steps_max: 5_000_000,
        cache_bytes_max: 512 * 1024 * 1024,
        time_max: Some(Duration::from_mins(1)),
    };

    /// A budget of `steps_max` steps, the default memory and no time limit
    /// (deterministic: the verdict does not depend on the machine's speed).
    pub const fn steps(steps_max: u64) -> Self {
        Self {
            steps_max,
            cache_bytes_max: Self::DEFAULT.cache_bytes_max,
            time_max: None,
        }
    }
}

impl Default for Budget {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// One operation as the search sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call<T> {
    /// The operation, with its results, as the specification applies it.
    pub op: T,
    /// Position of its invocation in real-time order.
    pub position_invoke: usize,
    /// Position of its completion; `None` for an unknown outcome: it may
    /// linearize at any point after its invocation, or never.
    pub position_complete: Option<usize>,
}

/// Why a search gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exhausted {
    /// [`Budget::steps_max`] reached.
    Steps,
    /// [`Budget::cache_bytes_max`] reached.
    Memory,
    /// [`Budget::time_max`] reached.
    Time,
}

/// The answer of a search.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict<S> {
    /// Some order of the operations explains every result.
    Linearizable,
    /// No order does. The deepest dead end the search met, to start
    /// debugging from.
    NotLinearizable(DeadEnd<S>),
    /// The budget ran out first.
    Unknown(Exhausted),
}

impl<S> Verdict<S> {
    /// Whether the verdict is [`Verdict::Linearizable`].
    pub const fn is_linearizable(&self) -> bool {
        matches!(self, Self::Linearizable)
    }

    /// Whether the verdict is [`Verdict::NotLinearizable`].
    pub const fn is_violation(&self) -> bool {
        matches!(self, Self::NotLinearizable(_))
    }
}

impl<S: fmt::Debug> fmt::Display for Verdict<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Linearizable => formatter.write_str("linearizable"),
            Self::NotLinearizable(dead_end) => write!(formatter, "not linearizable: {dead_end}"),
            Self::Unknown(exhausted) => write!(
                formatter,
                "unknown: search budget exhausted ({exhausted:?})"
            ),
        }
    }
}

/// The longest linearization the search built before every continuation
/// failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadEnd<S> {
    /// How many operations were linearized.
    pub linearized: usize,
    /// The state after them.
    pub state: S,
    /// Index (into the search's input) of the completed operation whose
    /// window closed before it could be linearized.
    pub blocked: usize,
}

impl<S: fmt::Debug> fmt::Display for DeadEnd<S> {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            formatter,
            "after linearizing {} operations (state {:?}), operation #{} cannot be placed",
            self.linearized, self.state, self.blocked
        )
    }
}

/// A verdict and what it cost.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Search<S> {
    /// The answer.
    pub verdict: Verdict<S>,
    /// Steps taken.
    pub steps: u64,
}

/// An event in the linked list: the call or the return of `calls[op]`.
#[derive(Clone, Copy, Debug)]
enum Node {
    Call { op: usize, ret: Option<usize> },
    Return { op: usize },
    Sentinel,
}

/// The event list with O(1) unlink and relink.
struct Links {
    nodes: Vec<Node>,
    next: Vec<usize>,
    prev: Vec<usize>,
}

const HEAD: usize = 0;

impl Links {
    /// Nodes `1..=events` in real-time order; `0` is the head, the last the
    /// tail. Calls sort before returns at equal positions (concurrent: the
    /// permissive reading of a tie).
    fn new<T>(calls: &[Call<T>]) -> Self {
        let mut events: Vec<(usize, bool, usize)> = Vec::with_capacity(calls.len() * 2);
        for (op, call) in calls.iter().enumerate() {
            events.push((call.position_invoke, false, op));
            if let Some(complete) = call.position_complete {
                assert!(
                    complete > call.position_invoke,
                    "completion before invocation"
                );
                events.push((complete, true, op));
            }
        }
        events.sort_unstable();
        let count = events.len() + 2;
        let mut nodes = vec![Node::Sentinel; count];
        let mut node_of_return = vec![None; calls.len()];
        for (index, &(_, is_return, op)) in events.iter().enumerate() {
            if is_return {
                nodes[index + 1] = Node::Return { op };
                node_of_return[op] = Some(index + 1);
            }
        }
        for (index, &(_, is_return, op)) in events.iter().enumerate() {
            if !is_return {
                nodes[index + 1] = Node::Call {
                    op,
                    ret: node_of_return[op],
                };
            }
        }
        Self {
            nodes,
            next: (1..=count).collect(),
            prev: (0..count).map(|index| index.saturating_sub(1)).collect(),
        }
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        self.prev[next] = prev;
    }

    /// Undoes `unlink(node)`; correct only in reverse order of unlinking.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        self.prev[next] = node;
    }

    fn lift(&mut self, call: usize, ret: Option<usize>) {
        self.unlink(call);
        if let Some(ret) = ret {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize, ret: Option<usize>) {
        if let Some(ret) = ret {
            self.relink(ret);
        }
        self.relink(call);
    }
}

/// A fixed-size set of operation indices.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct BitSet(Box<[u64]>);

impl BitSet {
    fn new(bits: usize) -> Self {
        Self(vec![0; bits.div_ceil(64)].into_boxed_slice())
    }

    fn set(&mut self, bit: usize) {
        self.0[bit / 64] |= 1 << (bit % 64);
    }

    fn clear(&mut self, bit: usize) {
        self.0[bit / 64] &= !(1 << (bit % 64));
    }

    fn get(&self, bit: usize) -> bool {
        self.0[bit / 64] & (1 << (bit % 64)) != 0
    }

    fn bytes(&self) -> usize {
        self.0.len() * 8
    }
}

/// One linearized operation on the stack: where it was, and the state
/// before it.
struct Choice<State> {
    node: usize,
    state_before: State,
    /// Linearized because it was read-only and valid: when it is undone,
    /// the choice before it is exhausted too.
    read_only: bool,
}

/// Searches for a linearization of `calls` against the specification `S`,
/// within `budget`.
///
/// Besides the cache, two prunings, each sound on its own:
///
/// * read-only operations are linearized greedily (see
///   [`Hints::is_read_only`]);
/// * identical operations of unknown outcome are interchangeable once both
///   are invoked (neither has a deadline), so they are linearized in
///   invocation order: an unknown `write 3` is tried only if every earlier
///   unknown `write 3` is already linearized.
pub fn check<S: Hints>(calls: &[Call<S::Operation>], budget: &Budget) -> Search<S::State>
where
    S::Operation: PartialEq,
{
    let mut search = Searcher::<S>::new(calls, budget);
    let verdict = search.run();
    Search {
        verdict,
        steps: search.steps,
    }
}

/// The search's state: the event list with the linearized operations
/// lifted out, the stack of choices, the cache.
struct Searcher<'a, S: Hints> {
    calls: &'a [Call<S::Operation>],
    budget: &'a Budget,
    links: Links,
    /// Returns still in the list: completed operations not linearized.
    returns_left: usize,
    state: S::State,
    linearized: BitSet,
    stack: Vec<Choice<S::State>>,
    cache: HashSet<(BitSet, S::State)>,
    /// Estimated bytes held by `cache`.
    cache_bytes: usize,
    twin_before: Vec<Option<usize>>,
    dead_end: Option<DeadEnd<S::State>>,
    started: Instant,
    steps: u64,
}

impl<'a, S: Hints> Searcher<'a, S>
where
    S::Operation: PartialEq,
{
    fn new(calls: &'a [Call<S::Operation>], budget: &'a Budget) -> Self {
        let returns_left = calls
            .iter()
            .filter(|call| call.position_complete.is_some())
            .count();
        Self {
            calls,
            budget,
            links: Links::new(calls),
            returns_left,
            state: S::init(),
            linearized: BitSet::new(calls.len()),
            stack: Vec::new(),
            cache: HashSet::new(),
            cache_bytes: 0,
            twin_before: twins(calls),
            dead_end: None,
            started: Instant::now(),
            steps: 0,
        }
    }

    fn run(&mut self) -> Verdict<S::State> {
        let mut cursor = self.links.next[HEAD];
        while self.returns_left > 0 {
            self.steps += 1;
            if let Some(exhausted) = self.over_budget() {
                return Verdict::Unknown(exhausted);
            }
            let resume = match self.links.nodes[cursor] {
                Node::Call { op, ret } => self.step_call(cursor, op, ret),
                Node::Return { op } => {
                    self.record_dead_end(op);
                    self.backtrack()
                }
                Node::Sentinel => unreachable!("the tail is past the last return"),
            };
            let Some(resume) = resume else {
                let dead_end = self.dead_end.take().expect("a return was met");
                return Verdict::NotLinearizable(dead_end);
            };
            cursor = resume;
        }
        Verdict::Linearizable
    }

    /// Tries to linearize `calls[op]` now; returns where to go next, `None`
    /// if the search is over.
    fn step_call(&mut self, node: usize, op: usize, ret: Option<usize>) -> Option<usize> {
        let waits_for_twin = self.twin_before[op].is_some_and(|twin| !self.linearized.get(twin));
        if waits_for_twin {
            return Some(self.links.next[node]);
        }
        let (valid, state_after) = S::apply(&self.calls[op].op, &self.state);
        if !valid {
            return Some(self.links.next[node]);
        }
        let read_only = S::is_read_only(&self.calls[op].op);
        self.linearized.set(op);
        if !self.cache_insert(&state_after) {
            self.linearized.clear(op);
            if read_only {
                // Valid here and already explored from here: this whole
                // level is exhausted (see `Hints::is_read_only`).
                self.record_dead_end(op);
                return self.backtrack();
            }
            return Some(self.links.next[node]);
        }
        self.links.lift(node, ret);
        let state_before = std::mem::replace(&mut self.state, state_after);
        self.stack.push(Choice {
            node,
            state_before,
            read_only,
        });
        self.returns_left -= usize::from(ret.is_some());
        Some(self.links.next[HEAD])
    }

    fn cache_insert(&mut self, state_after: &S::State) -> bool {
        let fresh = self
            .cache
            .insert((self.linearized.clone(), state_after.clone()));
        if fresh {
            self.cache_bytes +=
                CACHE_ENTRY_OVERHEAD_BYTES + self.linearized.bytes() + S::state_bytes(state_after);
        }
        fresh
    }

    /// Undoes choices until one that is not read-only is undone, and returns
    /// the node after it; `None` when the stack runs out: no linearization
    /// exists.
    fn backtrack(&mut self) -> Option<usize> {
        while let Some(choice) = self.stack.pop() {
            let Node::Call { op, ret } = self.links.nodes[choice.node] else {
                unreachable!("only calls are pushed");
            };
            self.links.unlift(choice.node, ret);
            self.linearized.clear(op);
            self.state = choice.state_before;
            self.returns_left += usize::from(ret.is_some());
            if !choice.read_only {
                return Some(self.links.next[choice.node]);
            }
        }
        None
    }

    /// Remembers the deepest point where operation `op` could not be placed.
    fn record_dead_end(&mut self, op: usize) {
        let linearized = self.stack.len();
        if self
            .dead_end
            .as_ref()
            .is_none_or(|dead| linearized > dead.linearized)
        {
            let state = self.state.clone();
            self.dead_end = Some(DeadEnd {
                linearized,
                state,
                blocked: op,
            });
        }
    }

    fn over_budget(&self) -> Option<Exhausted> {
        if self.steps > self.budget.steps_max {
            return Some(Exhausted::Steps);
        }
        if self.cache_bytes > self.budget.cache_bytes_max {
            return Some(Exhausted::Memory);
        }
        let time_max = self.budget.time_max?;
        (self.steps.is_multiple_of(STEPS_PER_CLOCK_CHECK) && self.started.elapsed() > time_max)
            .then_some(Exhausted::Time)
    }
}

/// For each call of unknown outcome, the closest earlier-invoked call of
/// unknown outcome with an identical operation, if any.
fn twins<T: PartialEq>(calls: &[Call<T>]) -> Vec<Option<usize>> {
    let mut unknown: Vec<usize> = (0..calls.len())
        .filter(|&index| calls[index].position_complete.is_none())
        .collect();
    unknown.sort_by_key(|&index| calls[index].position_invoke);
    let mut twin_before = vec![None; calls.len()];
    // Looks back a bounded distance: a twin further back is missed, which
    // only prunes less.
    for (rank, &index) in unknown.iter().enumerate() {
        twin_before[index] = unknown[..rank]
            .iter()
            .rev()
            .take(TWIN_LOOKBACK_MAX)
            .find(|&&earlier| calls[earlier].op == calls[index].op)
            .copied();
    }
    twin_before
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A register of small integers, initially 0: `(is_write, value)`.
    struct Register;

    impl Specification for Register {
        type State = u8;
        type Operation = (bool, u8);

        fn init() -> u8 {
            0
        }

        fn apply(&(is_write, value): &(bool, u8), state: &u8) -> (bool, u8) {
            if is_write {
                (true, value)
            } else {
                (value == *state, *state)
            }
        }
    }

    fn call(op: (bool, u8), invoke: usize, complete: Option<usize>) -> Call<(bool, u8)> {
        Call {
            op,
            position_invoke: invoke,
            position_complete: complete,
        }
    }

    impl Hints for Register {
        fn is_read_only(&(is_write, _): &(bool, u8)) -> bool {
            !is_write
        }
    }

    const W: bool = true;
    const R: bool = false;

    /// Concurrent writes may linearize in either order; reads pin it.
    #[test]
    fn accepts_reordered_concurrent_writes() {
        let calls = [
            call((W, 1), 0, Some(8)),
            call((W, 2), 1, Some(9)),
            call((R, 2), 2, Some(3)),
            call((R, 1), 4, Some(5)),
        ];
        let search = check::<Register>(&calls, &Budget::DEFAULT);
        assert_eq!(search.verdict, Verdict::Linearizable);
    }

    /// A read may not go back to a value overwritten before it began.
    #[test]
    fn rejects_stale_read() {
        let calls = [
            call((W, 1), 0, Some(1)),
            call((W, 2), 2, Some(3)),
            call((R, 1), 4, Some(5)),
        ];
        let search = check::<Register>(&calls, &Budget::DEFAULT);
        let Verdict::NotLinearizable(dead_end) = search.verdict else {
            panic!("{search:?}");
        };
        assert_eq!(dead_end.blocked, 2);
        assert_eq!(dead_end.linearized, 2);
        assert_eq!(dead_end.state, 2);
        assert_eq!(
            Verdict::NotLinearizable(dead_end).to_string(),
            "not linearizable: after linearizing 2 operations (state 2), operation #2 cannot be placed"
        );
    }

    /// An unknown-outcome write may take effect late (after later ops) or
    /// never; either can be what explains the reads.
    #[test]
    fn unknown_outcome_may_apply_late_or_never() {
        let late = [
            call((W, 1), 0, None),
            call((R, 0), 1, Some(2)),
            call((R, 1), 3, Some(4)),
        ];
        let search = check::<Register>(&late, &Budget::DEFAULT);
        assert_eq!(search.verdict, Verdict::Linearizable);
        let never = [call((W, 1), 0, None), call((R, 0), 1, Some(2))];
        let search = check::<Register>(&never, &Budget::DEFAULT);
        assert_eq!(search.verdict, Verdict::Linearizable);
        let before_invoke = [call((R, 1), 0, Some(1)), call((W, 1), 2, None)];
        let search = check::<Register>(&before_invoke, &Budget::DEFAULT);
        assert!(search.verdict.is_violation());
    }

    /// The empty history is linearizable; a tiny budget yields Unknown.
    #[test]
    fn empty_history_and_budget() {
        let search = check::<Register>(&[], &Budget::DEFAULT);
        assert_eq!(search.verdict, Verdict::Linearizable);
        let calls: Vec<_> = (0..20)
            .map(|index| call((W, index as u8), index, Some(100 + index)))
            .collect();
        let search = check::<Register>(&calls, &Budget::steps(5));
        assert_eq!(search.verdict, Verdict::Unknown(Exhausted::Steps));
        assert_eq!(search.steps, 6);
    }
}
