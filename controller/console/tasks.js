// The task pages: the task list with its filters, and one task's page — its head with
// the task's operations, what runs now, its DAG kept current from the task's event
// stream, and the drawer of a subtask with its operations and log. Which operations
// apply is the API's to say (`allowedOperations`); the page only reads it.

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

/**
 * Applies a transition to the task as read. A status the operations were not read with
 * leaves them unknown (null) until the task is read again; a change of the task's own
 * status may change its subtasks' too. A takeover names the controller that drives the
 * task from then on.
 */
function applyEvent(task, index, event) {
  if (event.takenOverBy !== undefined) task.executor = event.takenOverBy;
  if (event.subtaskId === undefined) {
    if (task.status !== event.status || task.operation !== event.operation) {
      task.allowedOperations = null;
      for (const sub of task.subtasks) sub.allowedOperations = null;
    }
    task.status = event.status;
    task.operation = event.operation;
    return;
  }
  const sub = index.get(event.subtaskId);
  if (!sub) return;
  if (sub.status !== event.status) sub.allowedOperations = null;
  sub.status = event.status;
  sub.operation = event.operation;
  if (event.status === "RUNNING") sub.startTime = event.time;
  if (event.status === "SUCCESSFUL" || event.status === "FAILED") sub.finishTime = event.time;
}

/**
 * A task's page: its DAG, kept current from the task's event stream, and read again
 * when the stream ends or a list of allowed operations on screen is out of date.
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
    (sid) => { page.selected = sid; openSubtask(page, sid, reloadTask, refresh); schedule(); },
    (key) => { page.unfolded.add(key); schedule(); });
  let scheduled = false;

  let headAs = "";
  function redraw() {
    scheduled = false;
    const t = page.task;
    if (t.allowedOperations === null) refresh();
    // The head is redrawn only when it changed: a quiet re-read must not swap a button
    // from under the user's pointer.
    const seen = JSON.stringify([t.status, t.paused, t.operation, t.finishTime, t.executor, t.allowedOperations]);
    if (seen !== headAs) {
      headAs = seen;
      renderTaskHead(page, head, live, reloadTask);
    }
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
  // One read at a time for out-of-date operations, and one more if asked meanwhile.
  let refreshing = false, again = false;
  function refresh() {
    if (refreshing) { again = true; return; }
    refreshing = true;
    reloadTask().catch(() => {}).finally(() => {
      refreshing = false;
      if (again && !signal.aborted) { again = false; refresh(); }
    });
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

/**
 * An operation button for `name` among `allowed` (the API's `allowedOperations`; null
 * while being read again), besides the permission it needs.
 */
function allowedButton(label, name, allowed, state, onclick) {
  const b = opButton(label, "TASK_MANAGER", () => onclick(b));
  if (!b.disabled && !(allowed || []).includes(name)) {
    b.disabled = true;
    b.title = allowed === null ? "checking what is allowed…" : `not allowed while ${state}`;
  }
  return b;
}

function renderTaskHead(page, head, live, reload) {
  const t = page.task;
  const paused = !!t.rollout && t.paused && t.status === "RUNNING";
  const state = `the task is ${t.status}${paused ? ", paused" : ""} (operation ${t.operation})`;
  const op = (label, name, path) => allowedButton(label, name, t.allowedOperations, state, async (b) => {
    if (await act(b, () => api("POST", `/tasks/instances/${t.id}/${path}`))) reload().catch(showError);
  });
  head.replaceChildren(
    h("h1", {}, `Task ${t.id}: ${t.name} `, h("span", { id: "task-status" }, badge(t.status)), paused ? h("span", { id: "task-paused" }, " paused") : "", " ", live),
    h("div", { class: "bar" },
      op("Retry", "RETRY", "retry"),
      op("Rollback", "ROLLBACK", "rollback"),
      op("Pause", "PAUSE", "pause"),
      op("Resume", "RESUME", "resume"),
      h("span", { class: "muted", id: "task-origin" },
        `by ${t.creator} · started ${when(t.startTime)}${t.finishTime ? ` · finished ${when(t.finishTime)}` : ""} · driven by ${t.executor}`),
    ),
  );
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
function openSubtask(page, sid, reload, refresh) {
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
    if (sub.allowedOperations === null) refresh();
    const state = `the step is ${sub.status} in a ${page.task.status} task (operation ${page.task.operation})`;
    const op = (label, name, path) => allowedButton(label, name, sub.allowedOperations, state, async (b) => {
      if (await act(b, () => api("POST", `/tasks/instances/${task.id}/subtasks/${sid}/${path}`))) reload().catch(showError);
    });
    buttons.replaceChildren(
      op("Retry step", "RETRY", "retry"),
      op("Skip step", "SKIP", "skip"),
      op("Cancel step", "CANCEL", "cancel"),
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
