//! The store's contract, checked on every backend the same way.

mod common;

use common::stores::test_stores;
use controller::model::AgentAction;
use controller::model::{
    AgentSummary, Change, EventSubtask, HostFilter, HostSort, HostSortKey, HostStatus, NewHost,
    Operation, PageRequest, ProcessSnapshot, SubtaskStatus, TaskFilter, TaskStatus,
};
use controller::plans;
use controller::store::{Claim, Store, StoreError, TaskOrigin};

async fn add_hosts(store: &Store, n: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..n {
        let host = store
            .insert_host(&NewHost {
                name: format!("h{i}"),
                inner_ip_address: format!("127.0.0.{}", i + 2),
                agent_port: 62888,
            })
            .await
            .expect("insert host");
        ids.push(host.id);
    }
    ids
}

fn claim() -> &'static Claim {
    static CLAIM: std::sync::OnceLock<Claim> = std::sync::OnceLock::new();
    CLAIM.get_or_init(|| Claim {
        owner: "127.0.0.1#1#test".into(),
        expires: i64::MAX,
        executor: "127.0.0.1".into(),
    })
}

fn origin() -> TaskOrigin<'static> {
    TaskOrigin {
        creator: "admin",
        trace_id: "135b61d1965d4be3",
        at: 1_630_650_026_243,
        claim: claim(),
    }
}

#[tokio::test]
async fn a_host_is_locked_by_one_task_at_a_time_and_a_refusal_creates_nothing() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 3).await;
        let first = store
            .create_task(&plans::batch(AgentAction::Restart, &hosts[..2]), &origin())
            .await
            .expect("first task");
        let refused = store
            .create_task(&plans::batch(AgentAction::Stop, &hosts[1..]), &origin())
            .await;
        match refused {
            Err(StoreError::HostBusy { host_id, task_id }) => {
                assert_eq!((host_id, task_id), (hosts[1], first.task_id), "{}", t.name)
            }
            other => panic!("{}: expected HostBusy, got {other:?}", t.name),
        }
        let all = store
            .list_tasks(
                &TaskFilter::default(),
                PageRequest {
                    number: 1,
                    size: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            all.total_elements, 1,
            "{}: the refused task left nothing",
            t.name
        );
        assert_eq!(
            store.lock_holder(hosts[2]).await.unwrap(),
            None,
            "{}",
            t.name
        );

        store
            .finish_task(&first, TaskStatus::Failed, Operation::Execute, 1)
            .await
            .unwrap();
        let holder = store
            .lock_holder(hosts[0])
            .await
            .unwrap()
            .expect("failed task keeps its hosts");
        assert_eq!(holder.status, TaskStatus::Failed, "{}", t.name);

        store
            .finish_task(&first, TaskStatus::Successful, Operation::Execute, 2)
            .await
            .unwrap();
        assert_eq!(
            store.lock_holder(hosts[0]).await.unwrap(),
            None,
            "{}",
            t.name
        );
        store
            .create_task(&plans::batch(AgentAction::Stop, &hosts), &origin())
            .await
            .expect("hosts free again");
    }
}

#[tokio::test]
async fn a_task_reads_back_with_its_dag() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 2).await;
        let plan = plans::batch(AgentAction::Restart, &hosts);
        let id = store.create_task(&plan, &origin()).await.unwrap().task_id;
        let task = store.get_task(id).await.unwrap().expect("task");
        assert_eq!(task.name, "Batch restart OCP agent", "{}", t.name);
        assert_eq!(task.status, TaskStatus::Running);
        assert_eq!(task.subtasks.len(), 5 * 2 + 4, "{}", t.name);
        assert_eq!(task.context, plan.context, "{}", t.name);
        let edges: usize = task.subtasks.iter().map(|s| s.downstreams.len()).sum();
        assert_eq!(edges, plan.edges.len(), "{}", t.name);
        for s in &task.subtasks {
            for d in &s.downstreams {
                let down = task.subtasks.iter().find(|x| x.id == *d).unwrap();
                assert!(
                    down.upstreams.contains(&s.id),
                    "{}: edges agree both ways",
                    t.name
                );
            }
        }
        let ready: Vec<_> = task
            .subtasks
            .iter()
            .filter(|s| s.status == SubtaskStatus::Ready)
            .collect();
        assert_eq!(ready.len(), 2, "{}", t.name);
        assert!(ready.iter().all(|s| s.upstreams.is_empty()));
        assert!(store.get_task(id + 1000).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn an_interrupted_subtask_is_requeued_as_a_new_attempt() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 1).await;
        let fence = store
            .create_task(&plans::single_host(AgentAction::Stop, hosts[0]), &origin())
            .await
            .unwrap();
        let id = fence.task_id;
        let first = store.get_task(id).await.unwrap().unwrap().subtasks[0].clone();
        store
            .start_subtasks(&fence, &[(first.id, Operation::Execute)], "127.0.0.1", 5)
            .await
            .unwrap();
        assert_eq!(store.running_task_ids().await.unwrap(), vec![id]);
        assert_eq!(
            store.requeue_interrupted(&fence, 6).await.unwrap(),
            1,
            "{}",
            t.name
        );
        let again = store.get_task(id).await.unwrap().unwrap().subtasks[0].clone();
        assert_eq!(
            (again.status, again.run_time),
            (SubtaskStatus::Ready, 2),
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn process_ids_stay_stable_across_refreshes() {
    for t in test_stores().await {
        let store = &t.store;
        let host = add_hosts(store, 1).await[0];
        let snap = |alias: &str, pid: i64| ProcessSnapshot {
            alias: alias.to_string(),
            pid,
            status: "STARTED".to_string(),
            operable: true,
            ..ProcessSnapshot::default()
        };
        let first = store
            .record_inventory(
                host,
                &AgentSummary::default(),
                &[snap("a", 10), snap("b", 11)],
                None,
            )
            .await
            .unwrap();
        let second = store
            .record_inventory(
                host,
                &AgentSummary::default(),
                &[snap("b", 21), snap("c", 22)],
                None,
            )
            .await
            .unwrap();
        let b1 = first.iter().find(|p| p.snapshot.alias == "b").unwrap();
        let b2 = second.iter().find(|p| p.snapshot.alias == "b").unwrap();
        assert_eq!(b1.id, b2.id, "{}: same alias, same id", t.name);
        assert_eq!(b2.snapshot.pid, 21, "{}", t.name);
        let aliases: Vec<_> = second.iter().map(|p| p.snapshot.alias.as_str()).collect();
        assert_eq!(
            aliases,
            vec!["b", "c"],
            "{}: a process the agent dropped is gone",
            t.name
        );
        let one = store.record_process(host, &snap("c", 33)).await.unwrap();
        assert_eq!(one.id, second[1].id, "{}", t.name);
        assert_eq!(
            store
                .get_process(host, one.id)
                .await
                .unwrap()
                .unwrap()
                .snapshot
                .pid,
            33
        );
    }
}

#[tokio::test]
async fn hosts_are_unique_by_address_and_busy_ones_cannot_be_deleted() {
    for t in test_stores().await {
        let store = &t.store;
        let host = add_hosts(store, 1).await[0];
        let dup = store
            .insert_host(&NewHost {
                name: "again".to_string(),
                inner_ip_address: "127.0.0.2".to_string(),
                agent_port: 62888,
            })
            .await;
        assert!(
            matches!(dup, Err(StoreError::HostExists { existing_id, .. }) if existing_id == host),
            "{}: {dup:?}",
            t.name
        );
        store
            .set_host_status(host, HostStatus::Online, Some(42))
            .await
            .unwrap();
        let got = store.get_host(host).await.unwrap().unwrap();
        assert_eq!(
            (got.status, got.last_available_time),
            (HostStatus::Online, Some(42))
        );
        let task = store
            .create_task(&plans::single_host(AgentAction::Start, host), &origin())
            .await
            .unwrap();
        assert!(matches!(
            store.delete_host(host).await,
            Err(StoreError::HostBusy { task_id, .. }) if task_id == task.task_id
        ));
        store.release_host_lock(&task, host).await.unwrap();
        assert_eq!(
            store.delete_host(host).await.unwrap().map(|h| h.id),
            Some(host)
        );
        assert!(store.get_host(host).await.unwrap().is_none(), "{}", t.name);
    }
}

#[tokio::test]
async fn tasks_list_newest_first_with_filters_and_pages() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 3).await;
        let mut ids = Vec::new();
        for &h in &hosts {
            ids.push(
                store
                    .create_task(&plans::single_host(AgentAction::Restart, h), &origin())
                    .await
                    .unwrap(),
            );
        }
        store
            .finish_task(&ids[0], TaskStatus::Successful, Operation::Execute, 9)
            .await
            .unwrap();
        let ids: Vec<i64> = ids.iter().map(|f| f.task_id).collect();
        let page = store
            .list_tasks(&TaskFilter::default(), PageRequest { number: 1, size: 2 })
            .await
            .unwrap();
        assert_eq!(page.total_elements, 3);
        assert_eq!(page.total_pages(), 2);
        assert_eq!(
            page.contents.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![ids[2], ids[1]]
        );
        let running = store
            .list_tasks(
                &TaskFilter {
                    status: Some(TaskStatus::Running),
                    host_id: Some(hosts[1]),
                    ..TaskFilter::default()
                },
                PageRequest {
                    number: 1,
                    size: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            running.contents.iter().map(|t| t.id).collect::<Vec<_>>(),
            vec![ids[1]],
            "{}",
            t.name
        );
    }
}

#[tokio::test]
async fn hosts_list_by_status_keyword_and_order_alike_on_every_store() {
    for t in test_stores().await {
        let store = &t.store;
        if let Some(url) = t.postgres_url() {
            with_english_collation(&url).await;
        }
        let mut ids = Vec::new();
        for (name, address) in [
            ("Zeta", "10.0.0.1"),
            ("alpha", "10.0.0.2"),
            ("web_1", "10.0.1.3"),
            ("web%2", "192.168.0.4"),
            ("webx1", "10.0.2.5"),
            ("back\\slash", "10.0.0.6"),
            ("Éclair", "10.0.3.7"),
        ] {
            let host = store
                .insert_host(&NewHost {
                    name: name.to_string(),
                    inner_ip_address: address.to_string(),
                    agent_port: 62888,
                })
                .await
                .expect("insert host");
            ids.push(host.id);
        }
        store
            .set_host_status(ids[0], HostStatus::Online, Some(1))
            .await
            .unwrap();
        store
            .set_host_status(ids[1], HostStatus::Offline, None)
            .await
            .unwrap();
        let list = |filter: HostFilter, size: u32| async move {
            let page = store
                .list_hosts(&filter, PageRequest { number: 1, size })
                .await
                .unwrap();
            let names: Vec<String> = page.contents.into_iter().map(|h| h.name).collect();
            (names, page.total_elements)
        };
        let keyword = |k: &str| HostFilter {
            keyword: Some(k.to_string()),
            ..HostFilter::default()
        };
        let sorted = |key: HostSortKey, ascending: bool| HostFilter {
            sort: HostSort { key, ascending },
            ..HostFilter::default()
        };
        let all = |names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let total = names.len() as i64;
            (names, total)
        };
        let store_name = t.name;

        assert_eq!(
            list(HostFilter::default(), 10).await,
            all(&[
                "Zeta",
                "alpha",
                "web_1",
                "web%2",
                "webx1",
                "back\\slash",
                "Éclair"
            ]),
            "{store_name}: oldest first by default"
        );
        let by_status = HostFilter {
            statuses: vec![HostStatus::Online, HostStatus::Offline],
            ..HostFilter::default()
        };
        assert_eq!(
            list(by_status, 10).await,
            all(&["Zeta", "alpha"]),
            "{store_name}"
        );
        let new_ones = HostFilter {
            statuses: vec![HostStatus::New],
            ..HostFilter::default()
        };
        assert_eq!(
            list(new_ones, 2).await,
            (vec!["web_1".to_string(), "web%2".to_string()], 5),
            "{store_name}: the total counts every NEW host, not the page"
        );
        // `_` and `%` are themselves, not LIKE's wildcards: webx1 does not match "web_".
        assert_eq!(
            list(keyword("WEB_"), 10).await,
            all(&["web_1"]),
            "{store_name}"
        );
        assert_eq!(
            list(keyword("%"), 10).await,
            all(&["web%2"]),
            "{store_name}"
        );
        assert_eq!(
            list(keyword("\\"), 10).await,
            all(&["back\\slash"]),
            "{store_name}"
        );
        assert_eq!(
            list(keyword("ALPHA"), 10).await,
            all(&["alpha"]),
            "{store_name}"
        );
        assert_eq!(
            list(keyword("10.0.0."), 10).await,
            all(&["Zeta", "alpha", "back\\slash"]),
            "{store_name}: the address is searched too"
        );
        assert_eq!(list(keyword("nothing"), 10).await, all(&[]), "{store_name}");
        // Only ASCII letters match in either case, on both stores: SQLite knows no more.
        assert_eq!(
            list(keyword("ÉCLAIR"), 10).await,
            all(&["Éclair"]),
            "{store_name}"
        );
        assert_eq!(list(keyword("éclair"), 10).await, all(&[]), "{store_name}");
        let online_web = HostFilter {
            statuses: vec![HostStatus::Online],
            keyword: Some("web".to_string()),
            ..HostFilter::default()
        };
        assert_eq!(
            list(online_web, 10).await,
            all(&[]),
            "{store_name}: both filters hold"
        );

        // Text is ordered by its bytes on both stores, whatever PostgreSQL's locale:
        // capitals before lower case, punctuation by its code.
        assert_eq!(
            list(sorted(HostSortKey::Name, true), 10).await,
            all(&[
                "Zeta",
                "alpha",
                "back\\slash",
                "web%2",
                "web_1",
                "webx1",
                "Éclair"
            ]),
            "{store_name}"
        );
        assert_eq!(
            list(sorted(HostSortKey::InnerIpAddress, false), 10).await,
            all(&[
                "web%2",
                "Éclair",
                "webx1",
                "web_1",
                "back\\slash",
                "alpha",
                "Zeta"
            ]),
            "{store_name}"
        );
        // Ties are broken by id, in the same direction.
        assert_eq!(
            list(sorted(HostSortKey::Status, false), 10).await,
            all(&[
                "Zeta",
                "alpha",
                "Éclair",
                "back\\slash",
                "webx1",
                "web%2",
                "web_1"
            ]),
            "{store_name}"
        );
        assert_eq!(
            list(sorted(HostSortKey::CreateTime, false), 3).await,
            (
                vec![
                    "Éclair".to_string(),
                    "back\\slash".to_string(),
                    "webx1".to_string()
                ],
                7
            ),
            "{store_name}"
        );
    }
}

/// Gives the hosts' text columns an English collation, as a server set up with an
/// English locale would: a list ordered by that instead of by bytes would differ from
/// SQLite's. A server without ICU keeps its own, said so on stderr.
async fn with_english_collation(url: &str) {
    use sqlx::Connection;
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let icu: Option<String> =
        sqlx::query_scalar("SELECT collname::text FROM pg_collation WHERE collname = 'en-x-icu'")
            .fetch_optional(&mut conn)
            .await
            .expect("collations");
    if icu.is_none() {
        eprintln!("no en-x-icu collation: the host list is ordered under the server's own");
        return;
    }
    sqlx::query(
        "ALTER TABLE hosts ALTER COLUMN name TYPE TEXT COLLATE \"en-x-icu\", \
         ALTER COLUMN inner_ip_address TYPE TEXT COLLATE \"en-x-icu\", \
         ALTER COLUMN status TYPE TEXT COLLATE \"en-x-icu\"",
    )
    .execute(&mut conn)
    .await
    .expect("collation");
}

/// A one-host stop task whose first subtask runs: its fence, id and that subtask's id.
async fn a_started_stop(store: &Store) -> (controller::store::Fence, i64, i64) {
    let host = add_hosts(store, 1).await[0];
    let fence = store
        .create_task(&plans::single_host(AgentAction::Stop, host), &origin())
        .await
        .unwrap();
    let id = fence.task_id;
    let first = store.get_task(id).await.unwrap().unwrap().subtasks[0].id;
    store
        .start_subtasks(&fence, &[(first, Operation::Execute)], "127.0.0.1", 5)
        .await
        .unwrap();
    (fence, id, first)
}

#[tokio::test]
async fn operator_transitions_are_guarded_and_a_cancel_cut_short_counts_as_cancelled() {
    for t in test_stores().await {
        let store = &t.store;
        let (fence, id, first) = a_started_stop(store).await;
        assert!(
            matches!(
                store.retry_task(id, "ops", 6, claim()).await,
                Err(StoreError::Refused(_))
            ),
            "{}: a RUNNING task is not retried",
            t.name
        );
        store.mark_canceling(id, first, "ops", 7).await.unwrap();
        // The controller stops here; on its next start the cancel counts as done.
        store.requeue_interrupted(&fence, 8).await.unwrap();
        let cancelled = store.get_task(id).await.unwrap().unwrap().subtasks[0].clone();
        assert_eq!(
            (cancelled.status, cancelled.operation),
            (SubtaskStatus::Failed, Operation::Cancel),
            "{}",
            t.name
        );
        store
            .finish_task(&fence, TaskStatus::Failed, Operation::Execute, 9)
            .await
            .unwrap();
        let (retried, again) = store.retry_task(id, "ops", 10, claim()).await.unwrap();
        assert_eq!(retried, vec![first]);
        assert_eq!(again.generation, fence.generation + 1, "{}", t.name);
        assert!(
            matches!(
                store
                    .finish_task(&fence, TaskStatus::Failed, Operation::Execute, 11)
                    .await,
                Err(StoreError::Fenced { .. })
            ),
            "{}: the claim before the retry no longer writes",
            t.name
        );
        let retried = store.get_task(id).await.unwrap().unwrap();
        assert_eq!(
            (retried.status, retried.operation),
            (TaskStatus::Running, Operation::Retry)
        );
        assert_eq!(
            (retried.subtasks[0].status, retried.subtasks[0].run_time),
            (SubtaskStatus::Ready, 2),
            "{}",
            t.name
        );
        let events = store.events_after(id, 0, 100).await.unwrap();
        let words: Vec<&str> = events.iter().map(|e| e.change.status()).collect();
        assert_eq!(
            words,
            [
                "RUNNING",
                "RUNNING",
                "CANCELING",
                "FAILED",
                "FAILED",
                "RUNNING",
                "READY"
            ],
            "{}: every transition, in order",
            t.name
        );
    }
}

#[tokio::test]
async fn a_large_batch_is_written_whole_across_statement_chunks() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 250).await;
        let plan = plans::batch(AgentAction::Restart, &hosts);
        let id = store.create_task(&plan, &origin()).await.unwrap().task_id;
        let task = store.get_task(id).await.unwrap().expect("task");
        assert_eq!(task.subtasks.len(), 5 * 250 + 4, "{}", t.name);
        for (stored, planned) in task.subtasks.iter().zip(&plan.nodes) {
            assert_eq!(
                (
                    stored.step,
                    stored.host_id,
                    stored.series_id,
                    stored.parallel_idx
                ),
                (
                    planned.step,
                    planned.host_id,
                    planned.series_id,
                    planned.parallel_idx
                ),
                "{}: subtasks keep the plan's order",
                t.name
            );
        }
        let edges: usize = task.subtasks.iter().map(|s| s.upstreams.len()).sum();
        assert_eq!(edges, plan.edges.len(), "{}", t.name);
    }
}

/// `owner`'s claim; its controller is advertised as `owner` too.
fn claim_for(owner: &str, expires: i64) -> Claim {
    Claim {
        owner: owner.into(),
        expires,
        executor: owner.into(),
    }
}

/// Renewal, expiry, takeover and fencing, with the times given: a lease held and
/// renewed is not taken; one left to run out is, under a new generation; from then on
/// the old holder writes nothing, log lines included, and renews nothing.
#[tokio::test]
async fn a_lease_renewed_is_kept_and_one_run_out_is_taken_over_and_fences_its_old_holder() {
    for t in test_stores().await {
        let store = &t.store;
        let host = add_hosts(store, 1).await[0];
        let a = claim_for("a", 1_000);
        let held = store
            .create_task(
                &plans::single_host(AgentAction::Stop, host),
                &TaskOrigin {
                    claim: &a,
                    ..origin()
                },
            )
            .await
            .unwrap();
        let id = held.task_id;
        let b = claim_for("b", 4_000);
        let taken = store.take_over_leases(&b, 500, false, 10).await.unwrap();
        assert!(taken.is_empty(), "{}: not run out at 500", t.name);
        assert_eq!(
            store
                .renew_leases(&claim_for("a", 2_000), &[id])
                .await
                .unwrap(),
            vec![held.clone()],
            "{}",
            t.name
        );
        let taken = store.take_over_leases(&b, 1_500, false, 10).await.unwrap();
        assert!(taken.is_empty(), "{}: renewed until 2000", t.name);
        assert!(
            store
                .renew_leases(&claim_for("a", 3_000), &[id + 1])
                .await
                .unwrap()
                .is_empty(),
            "{}: a renewal names the tasks its controller drives, and this is not one",
            t.name
        );

        assert_eq!(store.get_task(id).await.unwrap().unwrap().executor, "a");
        let taken = store.take_over_leases(&b, 2_500, false, 10).await.unwrap();
        assert_eq!(taken.len(), 1, "{}", t.name);
        let now_b = taken[0].clone();
        assert_eq!(
            store.get_task(id).await.unwrap().unwrap().executor,
            "b",
            "{}: the task names the controller that drives it now",
            t.name
        );
        assert_eq!(
            (now_b.task_id, now_b.generation),
            (id, held.generation + 1),
            "{}",
            t.name
        );
        let first = store.get_task(id).await.unwrap().unwrap().subtasks[0].id;
        match store
            .start_subtasks(&held, &[(first, Operation::Execute)], "a", 2_600)
            .await
        {
            Err(StoreError::Fenced {
                holder, generation, ..
            }) => assert_eq!((holder.as_str(), generation), ("b", now_b.generation)),
            other => panic!("{}: the old holder wrote: {other:?}", t.name),
        }
        assert!(
            store
                .renew_leases(&claim_for("a", 5_000), &[id])
                .await
                .unwrap()
                .is_empty(),
            "{}: nothing left to renew",
            t.name
        );
        let line = |fence: &controller::store::Fence, text: &str| controller::store::LogEntry {
            fence: fence.clone(),
            subtask_id: first,
            trace_id: "t".to_string(),
            at: 2_700,
            line: text.to_string(),
        };
        store
            .append_logs(&[line(&held, "from a"), line(&now_b, "from b")])
            .await
            .unwrap();
        let lines: Vec<String> = store
            .subtask_log(first)
            .await
            .unwrap()
            .into_iter()
            .map(|l| l.line)
            .collect();
        assert_eq!(lines, vec!["from b".to_string()], "{}", t.name);
        store
            .start_subtasks(&now_b, &[(first, Operation::Execute)], "b", 2_800)
            .await
            .expect("the new holder writes");
        let events = store.events_after(id, 0, 100).await.unwrap();
        let changes: Vec<Change> = events.iter().map(|e| e.change.clone()).collect();
        assert_eq!(
            changes,
            vec![
                Change::Task(TaskStatus::Running),
                Change::TakenOver { by: "b".into() },
                Change::Subtask(first, SubtaskStatus::Running),
            ],
            "{}: created, taken over by b, then b's start",
            t.name
        );
        let taken_over = &events[1];
        assert_eq!(
            (
                taken_over.message.as_str(),
                taken_over.operation,
                taken_over.at
            ),
            ("taken over by b", Operation::Execute, 2_500),
            "{}",
            t.name
        );
        assert_eq!(taken_over.subtask, None, "{}", t.name);
        assert_eq!(
            events[2].subtask,
            Some(EventSubtask {
                name: "Prepare stop OCP agent".to_string(),
                host_id: Some(host),
            }),
            "{}: a subtask's event says which step of which host",
            t.name
        );
    }
}

/// Controllers racing for the same run-out lease: exactly one gets it.
#[tokio::test]
async fn racing_takeovers_give_a_task_to_one_controller() {
    for t in test_stores().await {
        let store = &t.store;
        let hosts = add_hosts(store, 20).await;
        for &h in &hosts {
            store
                .create_task(
                    &plans::single_host(AgentAction::Restart, h),
                    &TaskOrigin {
                        claim: &claim_for("gone", 100),
                        ..origin()
                    },
                )
                .await
                .unwrap();
        }
        let (cx, cy) = (claim_for("x", 9_000), claim_for("y", 9_000));
        let (x, y) = tokio::join!(
            store.take_over_leases(&cx, 1_000, false, 100),
            store.take_over_leases(&cy, 1_000, false, 100)
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        assert_eq!(x.len() + y.len(), 20, "{}: {x:?} {y:?}", t.name);
        assert!(
            x.iter().all(|f| !y.iter().any(|g| g.task_id == f.task_id)),
            "{}: no task went to both",
            t.name
        );
    }
}

/// The Finish step of a controller that lost the task (paused past its lease, then
/// woken) must neither let go of the host nor overwrite the inventory the new holder
/// recorded: its write is fenced like every other engine write.
#[tokio::test]
async fn a_stale_holder_neither_releases_the_host_nor_rewrites_its_inventory() {
    for t in test_stores().await {
        let store = &t.store;
        let host = add_hosts(store, 1).await[0];
        let held = store
            .create_task(
                &plans::single_host(AgentAction::Restart, host),
                &TaskOrigin {
                    claim: &claim_for("a", 1_000),
                    ..origin()
                },
            )
            .await
            .unwrap();
        let now_b = store
            .take_over_leases(&claim_for("b", 9_000), 2_000, false, 10)
            .await
            .unwrap()
            .pop()
            .expect("taken over");
        let snap = |pid: i64| ProcessSnapshot {
            alias: "a".to_string(),
            pid,
            status: "STARTED".to_string(),
            operable: true,
            ..ProcessSnapshot::default()
        };
        store
            .record_inventory(host, &AgentSummary::default(), &[snap(20)], None)
            .await
            .unwrap();
        let stale = store
            .record_inventory(host, &AgentSummary::default(), &[snap(10)], Some(&held))
            .await;
        assert!(
            matches!(stale, Err(StoreError::Fenced { .. })),
            "{}: {stale:?}",
            t.name
        );
        assert_eq!(
            store.lock_holder(host).await.unwrap().map(|h| h.task_id),
            Some(now_b.task_id),
            "{}: the host stays locked for the task",
            t.name
        );
        let pids: Vec<i64> = store
            .list_processes(host)
            .await
            .unwrap()
            .iter()
            .map(|p| p.snapshot.pid)
            .collect();
        assert_eq!(pids, vec![20], "{}", t.name);
    }
}

/// A controller that froze in the middle of a transaction on a task (or died with the
/// connection still open) holds the task's row lock. A takeover scan must pass that task
/// by and take the others, not wait: the scan runs in the same round as the renewal of
/// the scanning controller's own leases, which would all run out behind it.
#[tokio::test]
async fn a_takeover_scan_passes_a_task_locked_by_a_stalled_transaction() {
    for t in test_stores().await {
        let Some(url) = t.postgres_url() else {
            continue;
        };
        let store = &t.store;
        let hosts = add_hosts(store, 2).await;
        let mut ids = Vec::new();
        for &h in &hosts {
            let fence = store
                .create_task(
                    &plans::single_host(AgentAction::Restart, h),
                    &TaskOrigin {
                        claim: &claim_for("frozen", 100),
                        ..origin()
                    },
                )
                .await
                .unwrap();
            ids.push(fence.task_id);
        }
        use sqlx::Connection;
        let mut frozen = sqlx::PgConnection::connect(&url).await.unwrap();
        let mut open = frozen.begin().await.unwrap();
        sqlx::query("UPDATE tasks SET lease_generation = lease_generation WHERE id = $1")
            .bind(ids[0])
            .execute(&mut *open)
            .await
            .unwrap();

        let taken = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            store.take_over_leases(&claim_for("b", 9_000), 1_000, false, 10),
        )
        .await
        .expect("the scan waited on the locked task")
        .unwrap();
        let taken: Vec<i64> = taken.iter().map(|f| f.task_id).collect();
        assert_eq!(taken, vec![ids[1]], "{}", t.name);

        open.rollback().await.unwrap();
        let taken = store
            .take_over_leases(&claim_for("b", 9_000), 1_000, false, 10)
            .await
            .unwrap();
        assert_eq!(
            taken.iter().map(|f| f.task_id).collect::<Vec<_>>(),
            vec![ids[0]],
            "{}: taken at the next scan once the lock is gone",
            t.name
        );
    }
}

/// What a resumed runner reads to tell a task that had failed from one reopened around
/// an older failure: only failures after the last (re)opening count.
#[tokio::test]
async fn a_failure_counts_until_the_task_is_reopened() {
    for t in test_stores().await {
        let store = &t.store;
        let (fence, id, first) = a_started_stop(store).await;
        assert!(!store.failed_since_reopen(id).await.unwrap(), "{}", t.name);
        let failed = controller::store::Outcome {
            id: first,
            status: SubtaskStatus::Failed,
            operation: Operation::Execute,
            log: Some("FAILED: no".to_string()),
        };
        store
            .record_outcomes(&fence, "t", 6, std::slice::from_ref(&failed), &[])
            .await
            .unwrap();
        assert!(store.failed_since_reopen(id).await.unwrap(), "{}", t.name);
        store.release_leases(&claim().owner).await.unwrap();
        let fence = store
            .take_over_leases(&claim_for("b", i64::MAX), 6, false, 10)
            .await
            .unwrap()
            .pop()
            .expect("taken over");
        assert!(
            store.failed_since_reopen(id).await.unwrap(),
            "{}: a takeover reopens nothing",
            t.name
        );
        store
            .finish_task(&fence, TaskStatus::Failed, Operation::Execute, 7)
            .await
            .unwrap();
        let fence = store
            .retry_subtask(id, first, "ops", 8, claim())
            .await
            .unwrap();
        assert!(
            !store.failed_since_reopen(id).await.unwrap(),
            "{}: the retry reopened it",
            t.name
        );
        assert_eq!(
            store.get_task(id).await.unwrap().unwrap().executor,
            "127.0.0.1",
            "{}: the controller the retry was asked of drives the task now",
            t.name
        );
        store
            .start_subtasks(&fence, &[(first, Operation::Retry)], "127.0.0.1", 9)
            .await
            .unwrap();
        store
            .record_outcomes(&fence, "t", 10, &[failed], &[])
            .await
            .unwrap();
        assert!(store.failed_since_reopen(id).await.unwrap(), "{}", t.name);
    }
}

#[tokio::test]
async fn counts_group_tasks_subtasks_and_hosts_by_their_words() {
    for t in test_stores().await {
        let store = &t.store;
        assert_eq!(
            store.counts().await.unwrap(),
            Default::default(),
            "{}",
            t.name
        );
        let hosts = add_hosts(store, 4).await;
        store
            .set_host_status(hosts[0], HostStatus::Online, None)
            .await
            .unwrap();
        let done = store
            .create_task(&plans::single_host(AgentAction::Start, hosts[3]), &origin())
            .await
            .unwrap();
        store
            .finish_task(&done, TaskStatus::Successful, Operation::Execute, 9)
            .await
            .unwrap();
        let batch = store
            .create_task(&plans::batch(AgentAction::Restart, &hosts[..2]), &origin())
            .await
            .unwrap();
        store
            .create_task(&plans::single_host(AgentAction::Stop, hosts[2]), &origin())
            .await
            .unwrap();
        store
            .finish_task(&batch, TaskStatus::Failed, Operation::Execute, 9)
            .await
            .unwrap();
        let counts = store.counts().await.unwrap();
        let word = |s: &str| s.to_string();
        assert_eq!(
            counts.tasks,
            vec![
                (word("Batch restart OCP agent"), word("FAILED"), 1),
                (word("Start OCP agent"), word("SUCCESSFUL"), 1),
                (word("Stop OCP agent"), word("RUNNING"), 1),
            ],
            "{}",
            t.name
        );
        assert_eq!(
            counts.hosts,
            vec![(word("NEW"), 3), (word("ONLINE"), 1)],
            "{}",
            t.name
        );
        let subtasks = |name: &str, status: &str| {
            counts
                .subtasks
                .iter()
                .find(|(n, s, _)| n == name && s == status)
                .map_or(0, |(_, _, count)| *count)
        };
        // Two hosts' prepares are READY; the stop task's own prepare too.
        assert_eq!(
            subtasks("Prepare restart OCP agent", "READY"),
            2,
            "{}",
            t.name
        );
        assert_eq!(subtasks("Prepare stop OCP agent", "READY"), 1, "{}", t.name);
        assert_eq!(subtasks("Wait node", "PENDING"), 4, "{}", t.name);
        let total: i64 = counts.subtasks.iter().map(|(_, _, n)| n).sum();
        // The open ones: a batch restart of two hosts, and a stop (prepare, stop all,
        // finish); the finished start's subtasks are history, not counted.
        assert_eq!(
            subtasks("Prepare start OCP agent", "READY"),
            0,
            "{}",
            t.name
        );
        assert_eq!(total, (5 * 2 + 4) + 3, "{}", t.name);
    }
}
