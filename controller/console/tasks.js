// The task pages: the task list with its filters, and one task's page — its head with
// the task's operations, what runs now, its DAG kept current from the task's event
// stream, and the drawer of a subtask with its operations and log.

import { ApiError, api, query, request, watchTask } from "./api.js";
import { Dag, STATUSES, hostOf, legend } from "./dag.js";
import { act, badge, clearBanner, h, opButton, openDrawer, pager, showError, when } from "./dom.js";

/** The list's filter, kept while the tab is open. */
const taskFilter = { status: "", name: "", hostId: "", page: 1, size: 20 };

export function taskTable(tasks) {
  const rows = tasks.map((t) => h("tr", { class: "clickable", "data-task-id": t.id, onclick: () => (location.hash = `#/tasks/${t.id}`) },
    h("td", {}, t.id), h("td", {}, t.name), h("td", {}, badge(t.status), t.paused ? " paused" : ""),
    h("td", {}, t.operation), h("td", {}, t.creator), h("td", {}, when(t.startTime)), h("td", {}, when(t.finishTime))));
  return h("table", { id: "task-table" },
    h("thead", {}, h("tr", {}, ...["id", "name", "status", "operation", "creator", "started", "finished"].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No task matches."))));
}

export async function tasksView(view) {
  const list = h("div");
  let shown = "";
  let loads = 0;
  async function load() {
    const mine = ++loads;
    const page = await api("GET", "/tasks/instances" + query({
      status: taskFilter.status, name: taskFilter.name, hostId: taskFilter.hostId, page: taskFilter.page, size: taskFilter.size,
    }), undefined, view.abort.signal);
    if (mine !== loads) return;
    const seen = JSON.stringify(page);
    if (seen === shown) return;
    shown = seen;
    list.replaceChildren(taskTable(page.contents), pager(page.page, (n) => { taskFilter.page = n; load().catch(showError); }));
  }
  const reload = () => { taskFilter.page = 1; load().then(clearBanner, showError); };
  const status = h("select", { id: "task-status", onchange: (ev) => { taskFilter.status = ev.target.value; reload(); } },
    h("option", { value: "" }, "any status"),
    ...["RUNNING", "FAILED", "SUCCESSFUL"].map((x) => h("option", { value: x, selected: x === taskFilter.status }, x)));
  const name = h("select", { id: "task-name", onchange: (ev) => { taskFilter.name = ev.target.value; reload(); } },
    h("option", { value: "" }, "any name"),
    ...["Batch restart OCP agent", "Batch stop OCP agent", "Batch start OCP agent", "Restart OCP agent", "Stop OCP agent", "Start OCP agent"]
      .map((x) => h("option", { value: x, selected: x === taskFilter.name }, x)));
  const host = h("input", { id: "task-host", type: "number", min: 1, placeholder: "host id", value: taskFilter.hostId,
    onchange: (ev) => { taskFilter.hostId = ev.target.value; reload(); } });
  await load();
  view.timers.push(setInterval(() => load().catch(() => {}), 5000));
  return h("div", { id: "tasks" }, h("h1", {}, "Tasks"), h("div", { class: "bar" }, status, name, host), list);
}

/** Subtasks by id: a thousand-host task gets fifteen thousand events. */
function indexOf(task) {
  return new Map(task.subtasks.map((x) => [x.id, x]));
}

/** The seq of the task's latest event when it was read (0 from an older controller). */
function seqOf(read) {
  return Number(read.headers.get("X-Task-Event-Seq")) || 0;
}

function applyEvent(task, index, event) {
  if (event.subtaskId === undefined) {
    task.status = event.status;
    task.operation = event.operation;
    return;
  }
  const sub = index.get(event.subtaskId);
  if (!sub) return;
  sub.status = event.status;
  sub.operation = event.operation;
  if (event.status === "RUNNING") sub.startTime = event.time;
  if (event.status === "SUCCESSFUL" || event.status === "FAILED") sub.finishTime = event.time;
}

/**
 * A task's page: its DAG, kept current from the task's event stream, and read again
 * when the stream ends.
 */
export async function taskView(id, view) {
  const signal = view.abort.signal;
  const first = await request("GET", `/tasks/instances/${id}`, undefined, signal);
  const page = { task: first.data, selected: null, unfolded: new Set(), lastSeq: seqOf(first), lastEventAt: 0, sinceRead: null, index: null };
  page.index = indexOf(page.task);
  const root = h("div", { id: "task", "data-task-id": id });
  const head = h("div");
  const now = h("div", { class: "now", id: "running-now" });
  const graph = h("div", { class: "graph", id: "dag" });
  const live = h("span", { class: "live", id: "live" });
  const dag = new Dag(graph,
    (sid) => { page.selected = sid; openSubtask(page, sid, reloadTask); schedule(); },
    (key) => { page.unfolded.add(key); schedule(); });
  let scheduled = false;

  let drawnAs = "";
  function redraw() {
    scheduled = false;
    // Redrawn only when something changed: a quiet re-read must not swap a button
    // from under the user's pointer.
    const t = page.task;
    const seen = [t.status, t.paused, t.operation, t.finishTime, page.selected, [...page.unfolded].join(),
      t.subtasks.map((x) => x.status + x.operation + x.runTime).join()].join("|");
    if (seen === drawnAs) return;
    drawnAs = seen;
    renderTaskHead(page, head, live, reloadTask);
    renderNow(t, now);
    dag.show(page);
  }
  function schedule() {
    // A thousand-host graph takes ~150 ms to draw: redrawn at most twice a second.
    if (!scheduled) { scheduled = true; setTimeout(redraw, page.task.subtasks.length > 1000 ? 500 : 150); }
  }
  // A read of the whole task may be overtaken by events, and by a later read: only the
  // latest read is kept, with the events that came while it was out applied again on
  // top, so the page never steps back to an older state.
  let reads = 0;
  async function reloadTask() {
    const mine = ++reads;
    page.sinceRead = [];
    let read;
    try {
      read = await request("GET", `/tasks/instances/${id}`, undefined, signal);
    } finally {
      if (mine === reads && !read) page.sinceRead = null;
    }
    if (mine !== reads) return;
    const task = read.data;
    const index = indexOf(task);
    for (const event of page.sinceRead) applyEvent(task, index, event);
    page.sinceRead = null;
    page.task = task;
    page.index = index;
    // The stream, if it reconnects, need not send again what this read shows.
    page.lastSeq = Math.max(page.lastSeq, seqOf(read));
    schedule();
    if (page.task.status === "RUNNING") follow();
    document.dispatchEvent(new CustomEvent("task-changed"));
  }
  let following = false;
  function setLive(text, on) {
    live.className = on ? "live on" : "live";
    live.textContent = text;
  }
  async function follow() {
    if (following) return;
    following = true;
    setLive("live", true);
    try {
      await watchTask(id, page.lastSeq, signal, (event) => {
        page.lastSeq = Math.max(page.lastSeq, event.seq);
        page.lastEventAt = Date.now();
        applyEvent(page.task, page.index, event);
        if (page.sinceRead) page.sinceRead.push(event);
        schedule();
        if (page.selected === event.subtaskId) document.dispatchEvent(new CustomEvent("task-changed"));
      });
      // The stream ends when the task stops running: read it whole once more (and
      // follow again if an operation made it run meanwhile).
      following = false;
      setLive("finished", false);
      await reloadTask();
    } catch (e) {
      following = false;
      if (e.name === "AbortError") return;
      if (e instanceof ApiError && e.status >= 400 && e.status < 500) {
        setLive("not live", false);
        showError(e);
        return;
      }
      setLive("reconnecting…", false);
      setTimeout(() => { if (!signal.aborted) follow(); }, 1000);
    }
  }

  root.append(head, now, legend(), graph);
  redraw();
  if (page.task.status === "RUNNING") follow();
  // A rolling task's pause is no transition, so no event tells it: while the stream is
  // quiet, read the task again.
  view.timers.push(setInterval(() => {
    if (page.task.rollout && page.task.status === "RUNNING" && Date.now() - page.lastEventAt > 2000) {
      reloadTask().catch(() => {});
    }
  }, 3000));
  return root;
}

function renderTaskHead(page, head, live, reload) {
  const t = page.task;
  const rolling = !!t.rollout;
  const op = (label, path, enabled, why) => {
    const b = opButton(label, "TASK_MANAGER", async () => { if (await act(b, () => api("POST", `/tasks/instances/${t.id}/${path}`))) reload().catch(showError); });
    if (!b.disabled && !enabled) { b.disabled = true; b.title = why; }
    return b;
  };
  const prohibit = t.context && t.context.stringMap && t.context.stringMap.prohibit_rollback === "true";
  const paused = rolling && t.paused && t.status === "RUNNING";
  head.replaceChildren(
    h("h1", {}, `Task ${t.id}: ${t.name} `, h("span", { id: "task-status" }, badge(t.status)), paused ? h("span", { id: "task-paused" }, " paused") : "", " ", live),
    h("div", { class: "bar" },
      op("Retry", "retry", reopens(t), "only a FAILED task that is not a rollback is retried"),
      op("Rollback", "rollback", t.status === "FAILED" && !prohibit, prohibit ? "this task prohibits rollback" : "only a FAILED task is rolled back"),
      op("Pause", "pause", rolling && t.status === "RUNNING" && !t.paused && t.operation !== "ROLLBACK", "only a running rolling task is paused"),
      op("Resume", "resume", paused && t.operation !== "ROLLBACK", "only a paused rolling task is resumed"),
      h("span", { class: "muted" }, `by ${t.creator} · started ${when(t.startTime)}${t.finishTime ? ` · finished ${when(t.finishTime)}` : ""}`),
    ),
  );
}

/** Whether the task may be reopened (retry, or a step's retry or skip): the store's rule. */
function reopens(task) {
  return task.status === "FAILED" && task.operation !== "ROLLBACK";
}

function renderNow(task, el) {
  const counts = Object.fromEntries(STATUSES.map((x) => [x, 0]));
  const running = new Map();
  for (const sub of task.subtasks) {
    counts[sub.status] += 1;
    if (sub.status === "RUNNING" || sub.status === "CANCELING") running.set(sub.name, (running.get(sub.name) || 0) + 1);
  }
  const summary = STATUSES.filter((x) => counts[x]).map((x) => `${counts[x]} ${x.toLowerCase()}`).join(" · ");
  const doing = [...running].map(([name, n]) => (n > 1 ? `${name} ×${n}` : name)).join(", ");
  const held = task.paused && task.status === "RUNNING" ? " — paused before its next batch: Resume goes on" : "";
  const text = `${task.subtasks.length} subtasks: ${summary}` + (doing ? ` — running now: ${doing}` : "") + held;
  if (el.textContent !== text) el.textContent = text;
}

/** The subtask drawer: what it is, its operations, and its log, kept current. */
function openSubtask(page, sid, reload) {
  const task = page.task;
  const pre = h("pre", { id: "subtask-log" }, "Loading…");
  const facts = h("dl");
  const buttons = h("div", { class: "bar" });
  const onChange = () => fill();
  document.addEventListener("task-changed", onChange);
  const drawer = openDrawer("Subtask", [facts, buttons, h("h2", {}, "Log"), pre],
    () => document.removeEventListener("task-changed", onChange));
  const fill = async () => {
    const sub = page.task.subtasks.find((x) => x.id === sid);
    if (!sub || drawer.hidden) return;
    drawer.querySelector(".head h2").textContent = `${sub.name}`;
    facts.replaceChildren(
      h("dt", {}, "id"), h("dd", {}, sub.id),
      h("dt", {}, "host"), h("dd", {}, hostOf(page.task, sub) || "whole task"),
      h("dt", {}, "status"), h("dd", { id: "subtask-status" }, badge(sub.status)),
      h("dt", {}, "operation"), h("dd", {}, sub.operation),
      h("dt", {}, "attempts"), h("dd", {}, sub.runTime),
      h("dt", {}, "started"), h("dd", {}, when(sub.startTime)),
      h("dt", {}, "finished"), h("dd", {}, when(sub.finishTime)),
      h("dt", {}, "class"), h("dd", {}, sub.className),
    );
    facts.className = "panel";
    const op = (label, path, enabled, why) => {
      const b = opButton(label, "TASK_MANAGER", async () => {
        if (await act(b, () => api("POST", `/tasks/instances/${task.id}/subtasks/${sid}/${path}`))) reload().catch(showError);
      });
      if (!b.disabled && !enabled) { b.disabled = true; b.title = why; }
      return b;
    };
    buttons.replaceChildren(
      op("Retry step", "retry", sub.status === "FAILED" && reopens(page.task), "only a FAILED step of a FAILED task (not a rollback) is retried"),
      op("Skip step", "skip", sub.status === "FAILED" && reopens(page.task), "only a FAILED step of a FAILED task (not a rollback) is skipped"),
      op("Cancel step", "cancel", sub.status === "RUNNING", "only a RUNNING subtask is cancelled"),
    );
    try {
      const log = await api("GET", `/tasks/instances/${task.id}/subtasks/${sid}/log`);
      pre.textContent = log.log || "(no log yet)";
    } catch (e) {
      pre.textContent = e instanceof ApiError ? e.describe() : String(e);
    }
  };
  fill();
}
