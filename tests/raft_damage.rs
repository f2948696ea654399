//! A damaged node in the core: one whose recovery cut entries it may have
//! acknowledged restarts with `HardState::after_damage`, votes only for a
//! log that holds what it may have acknowledged (none when it does not
//! know how far that went), campaigns only once its log holds that too,
//! still appends, and is
//! trusted again once it holds a committed entry of a term after the
//! damage (`raft::Core`, "Damaged nodes").

use rast::raft::{
    Action, Body, Boundary, Core, HardState, Message, OutgoingBody, RepairWait, RequestVote,
    Restart, Role,
};
use rast::types::{LogIndex, NodeId, Term};
use rast::wire::BatchKind;

#[path = "common/cores.rs"]
mod cores;

use cores::InstantCluster as Cluster;

/// Node 1 proposes `count` batches and the cluster settles.
fn commit_batches(cluster: &mut Cluster, count: usize) {
    for _ in 0..count {
        cluster.cores[0]
            .propose(BatchKind::Data, 1, 64, &mut cluster.actions)
            .expect("node 1 leads");
        cluster.route(0);
        cluster.cores[0].replicate(&mut cluster.actions);
        cluster.route(0);
        cluster.drain();
    }
}

/// Three nodes, node 1 elected, `batches` batches committed on all.
fn three_nodes_committed(batches: usize) -> Cluster {
    let mut cluster = Cluster::new(3, |_| {});
    cluster.elect();
    commit_batches(&mut cluster, batches);
    cluster
}

/// Node 3 restarts having lost its last batch (acknowledged and
/// committed) and the end of what it acknowledged: the damaged restart a
/// cut tail leads to when the durable mark does not read either.
fn damage_node_3(cluster: &mut Cluster) {
    let hard_state = cluster.cores[2].hard_state().after_damage(None);
    restart_node_3(cluster, hard_state, 1);
}

/// The node at `node` restarts damaged, having lost its last `lose`
/// batches, knowing the end of what it may have acknowledged (its log's
/// end before the damage, as its durable mark says).
fn damage_knowing_the_end(cluster: &mut Cluster, node: usize, lose: usize) {
    let log = cluster.cores[node].log();
    let end = (log.last_term(), log.last_index());
    let hard_state = cluster.cores[node].hard_state().after_damage(Some(end));
    restart_node(cluster, node, hard_state, lose);
}

/// Node 3 restarts with `hard_state`, its log without its last `lose`
/// batches.
fn restart_node_3(cluster: &mut Cluster, hard_state: HardState, lose: usize) {
    restart_node(cluster, 2, hard_state, lose);
}

/// The node at `node` restarts with `hard_state`, its log without its
/// last `lose` batches.
fn restart_node(cluster: &mut Cluster, node: usize, hard_state: HardState, lose: usize) {
    let old = &cluster.cores[node];
    let last = old.log().last_index();
    let mut batches: Vec<Boundary> = old.log().batches_in(LogIndex(1), last).copied().collect();
    batches.truncate(batches.len() - lose);
    let restart = Restart {
        hard_state,
        snapshot_index: LogIndex::ZERO,
        snapshot_term: Term::ZERO,
        membership: *old.membership(),
        batches: &batches,
        now_ms: 0,
    };
    let config = old.config().clone();
    cluster.cores[node] = Core::new(config, &restart);
}

/// The vote node 3 gives a candidate (node 2) whose log is at least as
/// up to date as any, at `term`.
fn vote_of_node_3(cluster: &mut Cluster, term: Term) -> bool {
    let log = cluster.cores[1].log();
    let last = (log.last_term(), log.last_index());
    vote_of_node_3_for(cluster, term, last)
}

/// The vote node 3 gives node 2 as a candidate whose log ends at `last`
/// (term, index), at `term`.
fn vote_of_node_3_for(cluster: &mut Cluster, term: Term, last: (Term, LogIndex)) -> bool {
    let request = Message {
        from: NodeId(2),
        to: NodeId(3),
        term,
        body: Body::RequestVote(RequestVote {
            last_index: last.1,
            last_term: last.0,
            pre_vote: false,
            leadership_transfer: false,
        }),
    };
    cluster.cores[2].step(&request, &mut cluster.actions);
    // Carry it out (a vote is sent once durable, so read it from the
    // hard state rather than from this call's actions).
    cluster.route(2);
    cluster.drain();
    let hard_state = cluster.cores[2].hard_state();
    assert_eq!(
        hard_state.term, term,
        "node 3 moved to the candidate's term"
    );
    hard_state.vote == NodeId(2)
}

/// A damaged node that knows the end of what it may have acknowledged
/// votes as its undamaged self would have: not for a log that ends where
/// its cut log does (which lacks a committed entry), only for one at
/// least as up to date as that end.
#[test]
fn a_damaged_node_votes_only_for_a_log_that_holds_what_it_acknowledged() {
    let mut cluster = three_nodes_committed(3);
    let term = cluster.cores[0].term();
    let log = cluster.cores[2].log();
    let full = (log.last_term(), log.last_index());
    assert_eq!(full.1, cluster.committed);

    damage_knowing_the_end(&mut cluster, 2, 1);
    let log = cluster.cores[2].log();
    let cut = (log.last_term(), log.last_index());
    assert!(cut < full, "node 3 lost its last, committed batch");
    assert!(!cluster.cores[2].trusted());
    assert_eq!(cluster.cores[2].hard_state().acked_end, Some(full));

    // A candidate as up to date as the cut log, not as the log it had:
    // refused (its undamaged self would have refused it).
    assert!(!vote_of_node_3_for(&mut cluster, Term(term.get() + 5), cut));
    // One holding everything it acknowledged: granted.
    assert!(vote_of_node_3_for(&mut cluster, Term(term.get() + 6), full));
}

/// Whether the node at `node` asks for votes when its election timer runs
/// out (however long it waits).
fn campaigns(cluster: &mut Cluster, node: usize) -> bool {
    let mut actions = Vec::new();
    cluster.cores[node].tick(3_600_000, &mut actions);
    actions.iter().any(|action| {
        matches!(action, Action::Send(message)
            if matches!(message.body, OutgoingBody::RequestVote(_)))
    })
}

/// A damaged node whose log is behind the end of what it acknowledged
/// does not campaign (its own vote would pass a log without a committed
/// entry by); once a leader's entries have brought its log past that end
/// it may, as any voter (two damaged nodes of three, ahead of the third,
/// would otherwise wait for good).
#[test]
fn a_damaged_node_campaigns_only_with_a_log_past_what_it_acknowledged() {
    let mut cluster = three_nodes_committed(3);
    damage_knowing_the_end(&mut cluster, 2, 1);
    assert!(!campaigns(&mut cluster, 2), "campaigned with a cut log");

    // Damaged with nothing cut from the log (what it held was already
    // past the end it acknowledged): it campaigns.
    let mut cluster = three_nodes_committed(3);
    damage_knowing_the_end(&mut cluster, 2, 0);
    let log = cluster.cores[2].log();
    assert_eq!(
        cluster.cores[2].hard_state().acked_end,
        Some((log.last_term(), log.last_index()))
    );
    assert!(!cluster.cores[2].trusted());
    assert!(
        campaigns(&mut cluster, 2),
        "a log as up to date as what it acknowledged"
    );
}

/// Without pre-vote or check-quorum a node ignores a stale leader (it
/// would campaign instead); a damaged one answers it, so that it steps
/// down: a damaged node may not be able to campaign, and two of three
/// could otherwise leave a leader of the old term in place for good,
/// unable to commit.
#[test]
fn a_damaged_node_tells_a_stale_leader_its_term() {
    let mut cluster = Cluster::new(3, |config| {
        config.pre_vote = false;
        config.check_quorum = false;
    });
    cluster.elect();
    commit_batches(&mut cluster, 2);
    damage_knowing_the_end(&mut cluster, 2, 1);
    assert!(cluster.cores[2].term() > cluster.cores[0].term());
    commit_batches(&mut cluster, 1);
    assert_ne!(cluster.cores[0].role(), Role::Leader, "told, it steps down");
    assert_eq!(cluster.cores[0].term(), cluster.cores[2].term());
}

/// Two of three voters damaged at once, each knowing the end of what it
/// acknowledged: the third, which holds all of it, is elected with their
/// votes and repairs both. (Without those ends they could not vote, and
/// no leader could be elected.)
#[test]
fn a_majority_of_damaged_voters_elects_the_node_that_holds_their_entries() {
    let mut cluster = three_nodes_committed(4);
    let committed = cluster.committed;
    damage_knowing_the_end(&mut cluster, 1, 2);
    damage_knowing_the_end(&mut cluster, 2, 1);
    assert!(!cluster.cores[1].trusted() && !cluster.cores[2].trusted());
    // Node 1 hears the bumped term and campaigns in a later one.
    commit_batches(&mut cluster, 1);
    assert_ne!(cluster.cores[0].role(), Role::Leader);
    cluster.elect();
    commit_batches(&mut cluster, 1);
    for node in 1..3 {
        let core = &cluster.cores[node];
        assert!(core.trusted(), "node {} repaired", node + 1);
        assert_eq!(core.log().last_index(), cluster.committed);
    }
    assert!(cluster.committed > committed);
}

#[test]
fn a_damaged_node_neither_votes_nor_campaigns_until_repaired() {
    let mut cluster = three_nodes_committed(3);
    let term = cluster.cores[0].term();
    assert_eq!(cluster.cores[2].log().last_index(), cluster.committed);

    damage_node_3(&mut cluster);
    let damaged = &cluster.cores[2];
    assert!(!damaged.trusted());
    assert_eq!(damaged.term(), term.next(), "the damage bumps the term");
    assert_eq!(damaged.hard_state().damaged_in, term);

    // No vote, even for a candidate whose log is the most up to date.
    assert!(!vote_of_node_3(&mut cluster, Term(term.get() + 5)));
    // No campaign, however long it waits.
    assert!(
        !campaigns(&mut cluster, 2),
        "a damaged node asked for votes"
    );
    assert_eq!(cluster.cores[2].role(), Role::Follower);

    // The leader of the damaged term hears the bumped term at its next
    // AppendEntries and steps down: nobody counts the lost entries as
    // held by node 3 any more.
    commit_batches(&mut cluster, 1);
    assert_ne!(cluster.cores[0].role(), Role::Leader);
    assert!(!cluster.cores[2].trusted());

    // A new leader (node 1, elected by node 2 alone with itself) commits
    // an entry of its term: node 3 catches up and is trusted again, and
    // the cleared mark is persisted.
    cluster.elect();
    assert!(cluster.cores[0].term() > term);
    commit_batches(&mut cluster, 1);
    let repaired = &cluster.cores[2];
    assert!(
        repaired.trusted(),
        "node 3 holds a committed entry of a later term"
    );
    assert_eq!(repaired.hard_state().damaged_in, Term::ZERO);
    assert_eq!(repaired.log().last_index(), cluster.committed);
    assert!(vote_of_node_3(&mut cluster, Term(term.get() + 10)));
}

/// The mark survives restarts: a node damaged twice keeps the later
/// term and the higher end of what it acknowledged (none if either is
/// unknown), and an undamaged hard state has none.
#[test]
fn after_damage_marks_the_latest_term() {
    let state = HardState {
        term: Term(7),
        vote: NodeId(2),
        commit: LogIndex(40),
        damaged_in: Term::ZERO,
        acked_end: None,
    };
    let end = (Term(7), LogIndex(44));
    let once = state.after_damage(Some(end));
    assert_eq!(
        once,
        HardState {
            term: Term(8),
            vote: NodeId::ZERO,
            commit: LogIndex(40),
            damaged_in: Term(7),
            acked_end: Some(end),
        }
    );
    let twice = once.after_damage(Some((Term(7), LogIndex(41))));
    assert_eq!(twice.damaged_in, Term(8));
    assert_eq!(twice.acked_end, Some(end), "the higher end stays");
    let later = (Term(8), LogIndex(42));
    assert_eq!(once.after_damage(Some(later)).acked_end, Some(later));
    assert_eq!(once.after_damage(None).acked_end, None);
    assert_eq!(
        state.after_damage(None).after_damage(Some(end)).acked_end,
        None
    );
    assert_eq!(
        HardState::lost(Term(3)).after_damage(Some(end)).acked_end,
        None
    );
}

/// A node that lost its hard state (both copies) acts on no message — it
/// takes no entry from the leader, grants nothing — until it has heard
/// the term of every other voter, asking each with a pre-vote request of
/// term 0. Then it goes on as a damaged node above the highest term heard
/// (`raft::Core`, "A lost hard state"), and a leader of a later term
/// repairs it.
#[test]
fn a_node_that_lost_its_hard_state_hears_every_voter_first() {
    let mut cluster = three_nodes_committed(3);
    let term = cluster.cores[0].term();

    let last_term = cluster.cores[2].log().last_term();
    restart_node_3(&mut cluster, HardState::lost(last_term), 0);
    let held = cluster.cores[2].log().last_index();

    // The leader's entries are not taken (nor acknowledged): its term may
    // be below one node 3 had moved past. Nodes 1 and 2 commit without it.
    commit_batches(&mut cluster, 2);
    assert_eq!(cluster.cores[2].log().last_index(), held);
    assert!(cluster.cores[2].hard_state().is_lost());
    // No vote either.
    assert!(!cluster.cores[2].trusted());

    // At its election timeout it asks the term of every voter not heard
    // yet: node 1 was, through its appends.
    let mut actions = Vec::new();
    cluster.cores[2].tick(3_600_000, &mut actions);
    let probed: Vec<NodeId> = actions
        .iter()
        .filter_map(|action| match action {
            Action::Send(message) if message.term == Term::ZERO => match message.body {
                OutgoingBody::RequestVote(RequestVote { pre_vote: true, .. }) => Some(message.to),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert_eq!(probed, vec![NodeId(2)]);
    cluster.actions = actions;
    cluster.route(2);
    cluster.drain();

    // Every voter heard: a damaged node above the highest term heard.
    let rebuilt = cluster.cores[2].hard_state();
    assert_eq!(rebuilt.damaged_in, term, "the highest term heard");
    assert_eq!(rebuilt.term, term.next());
    assert_eq!(rebuilt.vote, NodeId::ZERO);
    assert!(!cluster.cores[2].trusted());

    // As any damaged node: the leader of that term steps down at its
    // answer, a leader of a later term commits, and node 3 holds it all.
    commit_batches(&mut cluster, 1);
    assert_ne!(cluster.cores[0].role(), Role::Leader);
    cluster.elect();
    commit_batches(&mut cluster, 1);
    assert!(cluster.cores[2].trusted(), "repaired");
    assert_eq!(cluster.cores[2].log().last_index(), cluster.committed);
}

/// A `MajorityLost` a node emitted: (node position, acked end, best log).
type Said = (usize, (Term, LogIndex), (Term, LogIndex));

/// Lets `rounds` election timeouts pass after `now_ms` on the nodes at
/// `ticking` (the others are down: they neither tick nor are heard
/// campaigning), routing everything; returns each `MajorityLost` emitted:
/// (node, acked end, best log).
fn majority_lost_over(
    cluster: &mut Cluster,
    now_ms: &mut u64,
    ticking: &[usize],
    rounds: u64,
) -> Vec<Said> {
    let timeout = cluster.cores[0].config().timeout_ms_election;
    let mut lost = Vec::new();
    // Timers are randomized within [timeout, 2 × timeout): a step of half
    // a timeout fires each node's at least once every four steps.
    for _ in 0..rounds * 4 {
        *now_ms += timeout / 2;
        for &node in ticking {
            cluster.cores[node].tick(*now_ms, &mut cluster.actions);
            for action in &cluster.actions {
                if let Action::MajorityLost { acked_end, best } = *action {
                    lost.push((node, acked_end, best));
                }
            }
            cluster.route(node);
            cluster.drain();
        }
    }
    lost
}

/// Three voters; the two that hold the last batches (committed: node 1
/// led, node 2 acknowledged) both lose them to damage, and node 3 never
/// had them. No log holds those entries and no voter can be elected:
/// both damaged nodes say so, naming the end they waited for and the best
/// log there is, instead of waiting for good (`raft::Core`, "A majority
/// lost entries").
#[test]
fn a_majority_that_lost_committed_entries_says_so() {
    let mut cluster = three_nodes_committed(4);
    let full = {
        let log = cluster.cores[0].log();
        (log.last_term(), log.last_index())
    };
    // Node 3 lags behind by two batches (restarted undamaged without them:
    // as if they never reached it).
    let lagging = cluster.cores[2].hard_state();
    restart_node_3(&mut cluster, lagging, 2);
    damage_knowing_the_end(&mut cluster, 0, 2);
    damage_knowing_the_end(&mut cluster, 1, 2);
    let best = {
        let log = cluster.cores[2].log();
        (log.last_term(), log.last_index())
    };
    assert!(best < full);

    // Node 3 down: its log is not heard, and it may hold the entries.
    let mut now_ms = 0;
    assert_eq!(
        majority_lost_over(&mut cluster, &mut now_ms, &[0, 1], 10),
        vec![]
    );

    // Every voter heard: no candidate can win, and the entries up to the
    // end both acknowledged are on none.
    let lost = majority_lost_over(&mut cluster, &mut now_ms, &[0, 1, 2], 10);
    let mut nodes: Vec<usize> = lost.iter().map(|(node, _, _)| *node).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, vec![0, 1], "each damaged node says it once");
    for (_, acked_end, heard_best) in lost {
        assert_eq!(acked_end, full);
        assert_eq!(heard_best, best);
    }
    assert!(
        cluster.cores.iter().all(|core| core.role() != Role::Leader),
        "nobody could be elected"
    );
}

/// The same two damaged voters, with node 3 holding every entry they
/// acknowledged: it is elected with their votes and repairs them, and
/// nobody says anything is lost.
#[test]
fn damaged_voters_whose_entries_a_voter_holds_do_not_say_they_are_lost() {
    let mut cluster = three_nodes_committed(4);
    damage_knowing_the_end(&mut cluster, 0, 2);
    damage_knowing_the_end(&mut cluster, 1, 2);
    assert_eq!(
        majority_lost_over(&mut cluster, &mut 0, &[0, 1, 2], 10),
        vec![]
    );
    assert_eq!(cluster.cores[2].role(), Role::Leader);
    assert!(cluster.cores[0].trusted() && cluster.cores[1].trusted());
}

/// One damaged voter whose entries no log holds any more (the leader
/// lost them unsynced, undamaged, and node 3 never had them), beside two
/// voters that can elect each other: those entries were never committed,
/// and the damaged node does not say they were lost; a leader is elected
/// and repairs it.
#[test]
fn a_damaged_voter_beside_a_majority_that_can_elect_does_not_say_entries_are_lost() {
    let mut cluster = three_nodes_committed(4);
    for node in [0, 2] {
        let hard_state = cluster.cores[node].hard_state();
        restart_node(&mut cluster, node, hard_state, 2);
    }
    damage_knowing_the_end(&mut cluster, 1, 2);
    assert_eq!(
        majority_lost_over(&mut cluster, &mut 0, &[0, 1, 2], 10),
        vec![]
    );
    assert!(cluster.cores.iter().any(|core| core.role() == Role::Leader));
    assert!(cluster.cores[1].trusted(), "node 2 repaired");
}

/// What a damaged node concludes from what it hears alone: the other two
/// voters campaign with logs behind the end it waits for. They can elect
/// each other (each admits the other's log), so nothing is lost for good
/// even if no election has succeeded yet; were they both waiting damaged
/// nodes too, nothing could be elected.
#[test]
fn a_damaged_node_says_entries_are_lost_only_when_no_voter_can_be_elected() {
    for (others_wait, says_lost) in [(false, false), (true, true)] {
        let mut cluster = three_nodes_committed(4);
        let behind = {
            let log = cluster.cores[0].log();
            let last = log.last_index();
            let index = LogIndex(last.get() - 2);
            (log.term_at(index).expect("held"), index)
        };
        damage_knowing_the_end(&mut cluster, 1, 2);
        let end = cluster.cores[1].hard_state().acked_end;
        let term = cluster.cores[1].term();
        let timeout = cluster.cores[1].config().timeout_ms_election;
        let mut lost = false;
        for step in 1..=40 {
            for from in [NodeId(1), NodeId(3)] {
                let body = if others_wait {
                    Body::RepairWait(RepairWait {
                        last_index: behind.1,
                        last_term: behind.0,
                        acked_end: end,
                    })
                } else {
                    Body::RequestVote(RequestVote {
                        last_index: behind.1,
                        last_term: behind.0,
                        pre_vote: true,
                        leadership_transfer: false,
                    })
                };
                let message = Message {
                    from,
                    to: NodeId(2),
                    term,
                    body,
                };
                cluster.cores[1].step(&message, &mut cluster.actions);
            }
            cluster.cores[1].tick(step * timeout / 2, &mut cluster.actions);
            lost |= cluster
                .actions
                .drain(..)
                .any(|action| matches!(action, Action::MajorityLost { .. }));
        }
        assert_eq!(lost, says_lost, "others waiting: {others_wait}");
    }
}

/// A damaged node that may not campaign heard a leader, which died before
/// repairing it. With check-quorum, a node refuses (pre-)vote requests
/// while it has heard a leader within an election timeout; this one never
/// campaigns, so it must forget that leader when its timer runs out, or it
/// would refuse for good a candidate that holds what it acknowledged.
#[test]
fn a_damaged_node_forgets_a_dead_leader_and_grants_pre_votes() {
    let mut cluster = Cluster::new(3, |config| config.check_quorum = true);
    cluster.elect();
    commit_batches(&mut cluster, 3);
    let full = {
        let log = cluster.cores[1].log();
        (log.last_term(), log.last_index())
    };
    damage_knowing_the_end(&mut cluster, 2, 1);
    let term = cluster.cores[2].term();
    // A leader of its term is heard (then dies, unheard of).
    let heartbeat = Message {
        from: NodeId(1),
        to: NodeId(3),
        term,
        body: Body::Heartbeat(rast::raft::Heartbeat {
            leader_commit: LogIndex::ZERO,
            read_round: 0,
        }),
    };
    cluster.cores[2].step(&heartbeat, &mut cluster.actions);
    cluster.actions.clear();
    assert_eq!(cluster.cores[2].leader(), NodeId(1));
    // Its election timer runs out (it may not campaign).
    let timeout = cluster.cores[2].config().timeout_ms_election;
    cluster.cores[2].tick(2 * timeout, &mut cluster.actions);
    cluster.actions.clear();
    // Node 2, holding everything node 3 acknowledged, asks for a pre-vote.
    let request = Message {
        from: NodeId(2),
        to: NodeId(3),
        term: term.next(),
        body: Body::RequestVote(RequestVote {
            last_index: full.1,
            last_term: full.0,
            pre_vote: true,
            leadership_transfer: false,
        }),
    };
    cluster.cores[2].step(&request, &mut cluster.actions);
    let granted = cluster.actions.iter().any(|action| {
        matches!(action, Action::Send(message)
            if message.to == NodeId(2)
                && matches!(message.body, OutgoingBody::VoteResponse(response) if response.granted))
    });
    assert!(granted, "the pre-vote was refused: {:?}", cluster.actions);
}
