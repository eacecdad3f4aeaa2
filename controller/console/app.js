// The console: a single page over the controller's own REST API (/api/v2), signed in
// with the same Basic credentials, so it can do and see exactly what the API lets the
// user do and see. No build step and no dependencies: the controller embeds this file.
"use strict";

const API = "/api/v2";
const STATUSES = ["PENDING", "READY", "RUNNING", "CANCELING", "FAILED", "SUCCESSFUL"];
const HOST_STATUSES = ["NEW", "ONLINE", "OFFLINE"];
/** A stage with more subtasks than this is drawn as one box with a cell per subtask. */
const EXPAND_LIMIT = 8;
/** Runs of at least this many alike stages are folded into one row on big graphs. */
const FOLD_RUN = 4;
/** Graphs with fewer stages than this are drawn whole. */
const FOLD_ABOVE = 40;

const state = {
  auth: sessionStorage.getItem("ocp.auth"),
  me: null,
  hostSelection: new Set(),
  view: null, // { abort: AbortController, timers: [] } of the page on screen
  drawerCleanup: null,
};

// ---------- DOM helpers ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function s(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

function uptime(seconds) {
  if (!seconds || seconds < 0) return "–";
  const d = Math.floor(seconds / 86400), hh = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), sec = seconds % 60;
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, code, message, subErrors) {
    super(message);
    this.status = status;
    this.code = code;
    this.subErrors = subErrors || [];
  }
  /** What a person reads: the OCP code, the message, and which field was wrong. */
  describe() {
    const fields = this.subErrors.map((e) => `${e.field}: ${e.message}`).join("; ");
    const code = this.code ? `Error ${this.code}` : `HTTP ${this.status}`;
    return `${code}: ${this.message}${fields ? ` (${fields})` : ""}`;
  }
}

function headers(extra) {
  const out = { "X-Requested-With": "XMLHttpRequest", ...extra };
  if (state.auth) out.Authorization = `Basic ${state.auth}`;
  return out;
}

/** The call's `data` and its response headers; throws an ApiError for a refusal. */
async function request(method, path, body, signal) {
  let response;
  try {
    response = await fetch(API + path, {
      method,
      headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
    });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, 0, `the controller cannot be reached (${e.message})`);
  }
  let json = null;
  try {
    json = await response.json();
  } catch (_) {
    // An answer without OCP's envelope, e.g. from a proxy in between.
  }
  if (response.ok && json && json.successful) return { data: json.data, headers: response.headers };
  const err = (json && json.error) || {};
  const error = new ApiError(response.status, err.code, err.message || response.statusText, err.subErrors);
  // A session that stops being accepted (the password changed) ends; a wrong password
  // at sign-in is the sign-in form's to say.
  if (response.status === 401 && state.me) {
    signOut("Your session is no longer accepted: " + error.describe());
  }
  throw error;
}

async function api(method, path, body, signal) {
  return (await request(method, path, body, signal)).data;
}

const may = (permission) => !!state.me && state.me.permissions.includes(permission);

/** Runs an operation a button started, showing what the API said if it refused. */
async function act(button, work) {
  if (button) button.disabled = true;
  try {
    return await work();
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
    return undefined;
  } finally {
    if (button && button.isConnected) button.disabled = false;
  }
}

function showError(e) {
  if (e && e.name === "AbortError") return; // the page it was for is gone
  const banner = document.getElementById("banner");
  banner.className = "";
  banner.replaceChildren(
    h("span", { "data-code": e.code || "" }, e instanceof ApiError ? e.describe() : String(e.message || e)),
    h("button", { class: "close", onclick: () => (banner.hidden = true) }, "Dismiss"),
  );
  banner.hidden = false;
}

function clearBanner() {
  document.getElementById("banner").hidden = true;
}

/** An operation button: disabled, with the reason, when the user lacks the permission. */
function opButton(label, permission, onclick, extra) {
  const allowed = may(permission);
  const attrs = { "data-op": label, onclick, ...(extra || {}) };
  if (!allowed) {
    attrs.disabled = true;
    attrs.title = `needs ${permission}`;
  }
  return h("button", attrs, label);
}

// ---------- sign-in and routing ----------

function signOut(message) {
  state.auth = null;
  state.me = null;
  sessionStorage.removeItem("ocp.auth");
  location.hash = "#/login";
  render().then(() => message && showError(new Error(message)));
}

async function loadMe() {
  if (!state.auth) return null;
  try {
    state.me = await api("GET", "/profiles/me");
  } catch (e) {
    state.me = null;
    if (e.status !== 401) showError(e);
  }
  return state.me;
}

function renderHeader() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const route = location.hash.split("/")[1] || "";
  nav.replaceChildren();
  who.replaceChildren();
  if (!state.me) return;
  if (may("HOST_VIEWER")) nav.append(h("a", { href: "#/hosts", class: route === "hosts" ? "active" : null }, "Hosts"));
  if (may("TASK_VIEWER")) nav.append(h("a", { href: "#/tasks", class: route === "tasks" ? "active" : null }, "Tasks"));
  who.append(
    h("span", { id: "username", title: state.me.permissions.join(", ") }, state.me.username),
    h("button", { id: "signout", onclick: () => signOut() }, "Sign out"),
  );
}

function leaveView() {
  if (state.view) {
    state.view.abort.abort();
    state.view.timers.forEach(clearInterval);
  }
  state.view = { abort: new AbortController(), timers: [] };
  closeDrawer();
  return state.view;
}

async function render() {
  const view = leaveView();
  const main = document.getElementById("view");
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  if (!state.me && state.auth) await loadMe();
  renderHeader();
  if (!state.me) {
    main.replaceChildren(loginView());
    return;
  }
  const home = may("HOST_VIEWER") ? "#/hosts" : may("TASK_VIEWER") ? "#/tasks" : null;
  const routes = {
    hosts: () => (parts[1] ? hostView(Number(parts[1]), view) : hostsView(view)),
    tasks: () => (parts[1] ? taskView(Number(parts[1]), view) : tasksView(view)),
  };
  const route = routes[parts[0]];
  if (!route) {
    if (home) location.replace(home);
    else main.replaceChildren(h("p", {}, "This user may view neither hosts nor tasks."));
    return;
  }
  main.replaceChildren(h("p", { class: "muted" }, "Loading…"));
  try {
    const page = await route();
    if (page && state.view === view) {
      main.replaceChildren(page);
      // What the benchmark reads: when this page was painted with its data (the
      // frame after the change, then the task after that frame).
      requestAnimationFrame(() => setTimeout(() => performance.mark(`ocp:${parts[0]}-shown`)));
    }
  } catch (e) {
    if (e.name === "AbortError") return;
    main.replaceChildren(h("p", { class: "muted" }, "This page could not be shown."));
    showError(e);
  }
}

function loginView() {
  const user = h("input", { id: "login-user", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { id: "login-password", name: "password", type: "password", autocomplete: "current-password", required: true });
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      clearBanner();
      state.auth = btoa(unescape(encodeURIComponent(`${user.value}:${pass.value}`)));
      if (await loadMe()) {
        sessionStorage.setItem("ocp.auth", state.auth);
        // A deep link is kept; otherwise render() picks the page this user may see.
        if (location.hash === "#/login") location.hash = "#/";
        else render();
      } else {
        state.auth = null;
        showError(new Error("Sign-in refused: wrong user name or password."));
      }
    },
  },
    h("label", {}, "User", h("br"), user),
    h("label", {}, "Password", h("br"), pass),
    h("button", { class: "primary", id: "login-submit", type: "submit" }, "Sign in"),
  );
  return h("div", { class: "login panel" }, h("h1", {}, "Sign in"), form);
}

// ---------- hosts ----------

const hostFilter = { status: new Set(), keyword: "", sort: "id,asc", page: 1, size: 50 };

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.append(k, v);
  const text = q.toString();
  return text ? `?${text}` : "";
}

function pager(page, onPage) {
  const { number, totalPages, totalElements } = page;
  return h("div", { class: "pager" },
    h("button", { "data-page": "previous", disabled: number <= 1, onclick: () => onPage(number - 1) }, "‹ Previous"),
    h("span", {}, `page ${number} of ${Math.max(totalPages, 1)} · ${totalElements} in all`),
    h("button", { "data-page": "next", disabled: number >= totalPages, onclick: () => onPage(number + 1) }, "Next ›"),
  );
}

async function hostsView(view) {
  const root = h("div", { id: "hosts" });
  const list = h("div");
  const selected = h("span", { id: "selected-count" });
  const batch = batchForm(selected);

  let shown = "";
  let loads = 0;
  async function load() {
    const mine = ++loads;
    const page = await api("GET", "/compute/hosts" + query({
      status: [...hostFilter.status].join(","),
      keyword: hostFilter.keyword,
      sort: hostFilter.sort,
      page: hostFilter.page,
      size: hostFilter.size,
    }), undefined, view.abort.signal);
    // An answer overtaken by a later load (a refresh sent before a page or filter
    // change) is dropped.
    if (mine !== loads) return;
    // Redrawn only when more than the update times changed (a heartbeat rewrites
    // them), so that a refresh never swaps a row or a checkbox from under the pointer.
    const seen = JSON.stringify([page.page, page.contents.map(({ updateTime, ...rest }) => rest)]);
    if (seen === shown) {
      for (const x of page.contents) {
        const cell = list.querySelector(`tr[data-host-id="${x.id}"] .updated`);
        if (cell) cell.textContent = when(x.updateTime);
      }
      return;
    }
    shown = seen;
    list.replaceChildren(hostTable(page.contents, refreshCount), pager(page.page, (n) => { hostFilter.page = n; load().catch(showError); }));
    refreshCount();
  }
  function refreshCount() {
    selected.textContent = `${state.hostSelection.size} selected`;
    batch.querySelectorAll("button[data-batch]").forEach((b) => {
      b.disabled = !may("HOST_MANAGER") || state.hostSelection.size === 0;
    });
  }

  const keyword = h("input", { id: "host-keyword", placeholder: "name or address contains", value: hostFilter.keyword, maxlength: 256 });
  let typing;
  view.abort.signal.addEventListener("abort", () => clearTimeout(typing));
  keyword.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { hostFilter.keyword = keyword.value; hostFilter.page = 1; load().catch(showError); }, 250);
  });
  const statusBoxes = HOST_STATUSES.map((st) => h("label", {},
    h("input", {
      type: "checkbox", "data-status": st, checked: hostFilter.status.has(st),
      onchange: (ev) => { ev.target.checked ? hostFilter.status.add(st) : hostFilter.status.delete(st); hostFilter.page = 1; load().catch(showError); },
    }), st));
  const sort = h("select", { id: "host-sort", onchange: (ev) => { hostFilter.sort = ev.target.value; load().catch(showError); } },
    ...[["id,asc", "id"], ["name,asc", "name"], ["innerIpAddress,asc", "address"], ["status,asc", "status"], ["updateTime,desc", "recently updated"]]
      .map(([v, label]) => h("option", { value: v, selected: v === hostFilter.sort }, `sort by ${label}`)));

  root.append(
    h("h1", {}, "Hosts"),
    h("div", { class: "bar" }, keyword, ...statusBoxes, sort),
    batch,
    list,
    may("HOST_MANAGER") ? addHostForm(load) : null,
  );
  await load();
  view.timers.push(setInterval(() => load().catch(() => {}), 5000));
  return root;
}

function hostTable(hosts, onSelect) {
  const all = h("input", {
    type: "checkbox", id: "select-page", title: "select the hosts on this page",
    checked: hosts.length > 0 && hosts.every((x) => state.hostSelection.has(x.id)),
    onchange: (ev) => {
      for (const x of hosts) ev.target.checked ? state.hostSelection.add(x.id) : state.hostSelection.delete(x.id);
      document.querySelectorAll("input[data-host]").forEach((b) => (b.checked = ev.target.checked));
      onSelect();
    },
  });
  const rows = hosts.map((x) => h("tr", { class: "clickable", "data-host-id": x.id, onclick: (ev) => { if (ev.target.tagName !== "INPUT") location.hash = `#/hosts/${x.id}`; } },
    h("td", {}, h("input", {
      type: "checkbox", "data-host": x.id, checked: state.hostSelection.has(x.id),
      onchange: (ev) => { ev.target.checked ? state.hostSelection.add(x.id) : state.hostSelection.delete(x.id); onSelect(); },
    })),
    h("td", {}, x.id),
    h("td", {}, x.name),
    h("td", {}, `${x.innerIpAddress}:${x.agentPort}`),
    h("td", {}, badge(x.status)),
    h("td", { class: "wrap muted" }, x.statusReason || ""),
    h("td", { class: "updated" }, when(x.updateTime)),
  ));
  return h("table", { id: "host-table" },
    h("thead", {}, h("tr", {}, h("th", {}, all), ...["id", "name", "agent address", "status", "reason", "updated"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No host matches."))),
  );
}

/** Batch operations on the selected hosts, with SPEC section 9's rollout options. */
function batchForm(selected) {
  const rolling = h("input", { type: "checkbox", id: "rollout-on" });
  const field = (id, label, attrs) => h("label", {}, label, h("input", { id, class: "short", ...attrs }));
  const batchSize = field("rollout-batch-size", "batch size", { value: "1", placeholder: "2 or 25%" });
  const maxFailed = field("rollout-max-failed", "max failed hosts", { type: "number", min: 0, value: 0 });
  const pause = field("rollout-pause", "pause s", { type: "number", min: 0, value: 0 });
  const healthy = field("rollout-healthy", "healthy after s", { type: "number", min: 0, value: 0 });
  const canary = h("input", { type: "checkbox", id: "rollout-canary" });
  const number = (label) => Number(label.querySelector("input").value);

  async function submit(button, route) {
    const body = { hostIds: [...state.hostSelection] };
    if (rolling.checked) {
      const size = batchSize.querySelector("input").value.trim();
      body.rollout = {
        batchSize: /^\d+$/.test(size) ? Number(size) : size,
        maxFailedHosts: number(maxFailed),
        pauseSeconds: number(pause),
        minHealthySeconds: number(healthy),
        pauseAfterFirstBatch: canary.checked,
      };
    }
    const task = await act(button, () => api("POST", `/compute/hosts/${route}`, body));
    if (task) {
      state.hostSelection.clear();
      location.hash = `#/tasks/${task.id}`;
    }
  }
  const button = (label, route) => {
    const b = opButton(label, "HOST_MANAGER", () => submit(b, route), { "data-batch": route, disabled: true });
    return b;
  };
  return h("div", { class: "panel", id: "batch" },
    h("div", { class: "bar" }, selected,
      button("Restart agents", "batchRestartAgents"),
      button("Stop agents", "batchStopAgents"),
      button("Start agents", "batchStartAgents")),
    h("fieldset", {}, h("legend", {}, h("label", {}, rolling, "rolling, in batches")),
      batchSize, maxFailed, pause, healthy, h("label", {}, canary, "pause after the first batch")),
  );
}

function addHostForm(reload) {
  const ip = h("input", { id: "add-ip", placeholder: "10.0.0.5", required: true });
  const port = h("input", { id: "add-port", type: "number", min: 1, max: 65535, value: 62888, required: true });
  const name = h("input", { id: "add-name", placeholder: "optional" });
  const form = h("form", {
    class: "bar",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { innerIpAddress: ip.value.trim(), agentPort: Number(port.value) };
      if (name.value.trim()) body.name = name.value.trim();
      const host = await act(submit, () => api("POST", "/compute/hosts", body));
      if (host) { ip.value = ""; name.value = ""; clearBanner(); reload().catch(showError); }
    },
  }, h("label", {}, "address", ip), h("label", {}, "agent port", port), h("label", {}, "name", name));
  const submit = h("button", { type: "submit", "data-op": "Add host" }, "Add host");
  form.append(submit);
  return h("div", { class: "panel" }, h("h2", {}, "Add a host"), form);
}

async function hostView(id, view) {
  const signal = view.abort.signal;
  const [host, agent] = await Promise.all([
    api("GET", `/compute/hosts/${id}`, undefined, signal),
    api("GET", `/compute/hosts/${id}/agent`, undefined, signal),
  ]);
  const root = h("div", { id: "host" });
  const processes = h("div");
  const info = h("div", { class: "panel" });

  let shownProcesses = "";
  function renderAgent(a) {
    info.replaceChildren(h("dl", {},
      h("dt", {}, "address"), h("dd", {}, `${host.innerIpAddress}:${host.agentPort}`),
      h("dt", {}, "host status"), h("dd", {}, badge(host.status), host.statusReason ? ` ${host.statusReason}` : ""),
      h("dt", {}, "agent"), h("dd", { id: "agent-status" }, badge(a.status)),
      h("dt", {}, "agent version"), h("dd", { id: "agent-version" }, a.version || "–"),
      h("dt", {}, "last heartbeat"), h("dd", { id: "last-heartbeat" }, when(a.lastAvailableTime)),
      h("dt", {}, "install home"), h("dd", {}, a.installHome || "–"),
      h("dt", {}, "log home"), h("dd", {}, a.logHome || "–"),
    ));
    // What a refresh may change without a redraw: how long each process has been up.
    const seen = JSON.stringify(a.processes.map(({ elapsedTime, updateTime, lastActiveTime, ...rest }) => rest));
    if (seen !== shownProcesses || !processes.firstChild) {
      shownProcesses = seen;
      processes.replaceChildren(processTable(id, a.processes));
    } else {
      for (const p of a.processes) {
        const cell = processes.querySelector(`tr[data-process-id="${p.id}"] .uptime`);
        if (cell) cell.textContent = uptime(p.elapsedTime);
      }
    }
  }
  const agentOp = (label, path) => {
    const b = opButton(label, "HOST_MANAGER", async () => {
      const task = await act(b, () => api("POST", `/compute/hosts/${id}/agent/${path}`));
      if (task) location.hash = `#/tasks/${task.id}`;
    });
    return b;
  };
  const remove = opButton("Delete host", "HOST_MANAGER", async () => {
    if (!confirm(`Remove host ${host.name} from the inventory?`)) return;
    if (await act(remove, () => api("DELETE", `/compute/hosts/${id}`))) location.hash = "#/hosts";
  }, { class: "danger" });

  root.append(
    h("h1", {}, `Host ${host.name}`),
    h("div", { class: "bar" }, agentOp("Restart agent", "restart"), agentOp("Stop agent", "stop"), agentOp("Start agent", "start"), remove),
    info,
    h("h2", {}, "Processes"),
    processes,
  );
  renderAgent(agent);
  if (may("TASK_VIEWER")) {
    const tasks = await api("GET", `/tasks/instances${query({ hostId: id, size: 10 })}`, undefined, signal);
    root.append(h("h2", {}, "Recent tasks on this host"), taskTable(tasks.contents));
  }
  view.timers.push(setInterval(() => {
    api("GET", `/compute/hosts/${id}/agent`, undefined, signal).then(renderAgent).catch(() => {});
  }, 5000));
  return root;
}

function processTable(hostId, processes) {
  const rows = processes.map((p) => {
    const row = h("tr", { "data-process": p.alias, "data-process-id": p.id });
    const fill = (proc) => {
      const op = (label, path) => {
        const b = opButton(label, "HOST_MANAGER", async () => {
          row.querySelectorAll("button[data-op]").forEach((x) => (x.disabled = true));
          const after = await act(null, () => api("POST", `/compute/hosts/${hostId}/agent/processes/${proc.id}/${path}`));
          fill(after || proc);
        });
        if (!proc.operable) { b.disabled = true; b.title = "this process is not operable"; }
        return b;
      };
      const log = h("button", { "data-view": "log", onclick: () => processLog(hostId, proc) }, "Log");
      row.replaceChildren(
        h("td", {}, proc.alias),
        h("td", { class: "pid" }, proc.pid || "–"),
        h("td", {}, proc.user || "–"),
        h("td", {}, proc.ports || "–"),
        h("td", { class: "uptime" }, uptime(proc.elapsedTime)),
        h("td", { class: "state" }, badge(proc.status)),
        h("td", {}, op("Restart", "restart"), " ", op("Stop", "stop"), " ", op("Start", "start"), " ", log),
      );
    };
    fill(p);
    return row;
  });
  return h("table", { id: "process-table" },
    h("thead", {}, h("tr", {}, ...["process", "pid", "user", "ports", "uptime", "state", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "The agent reported no process."))),
  );
}

async function processLog(hostId, proc) {
  const pre = h("pre", { id: "log" }, "Loading…");
  openDrawer(`Log of ${proc.alias}`, h("p", { class: "muted" }, proc.logFilePattern || ""), pre);
  try {
    const log = await api("GET", `/compute/hosts/${hostId}/agent/processes/${proc.id}/log?lines=200`);
    pre.textContent = log.log || "(empty)";
  } catch (e) {
    pre.textContent = e instanceof ApiError ? e.describe() : String(e);
  }
}

function openDrawer(title, ...content) {
  closeDrawer();
  const drawer = document.getElementById("drawer");
  drawer.replaceChildren(
    h("div", { class: "head" }, h("h2", {}, title), h("button", { id: "drawer-close", onclick: closeDrawer }, "Close")),
    ...content,
  );
  drawer.hidden = false;
  return drawer;
}

/** Hides the drawer and stops what kept it current. */
function closeDrawer() {
  document.getElementById("drawer").hidden = true;
  if (state.drawerCleanup) state.drawerCleanup();
  state.drawerCleanup = null;
}

// ---------- tasks ----------

const taskFilter = { status: "", name: "", hostId: "", page: 1, size: 20 };

function taskTable(tasks) {
  const rows = tasks.map((t) => h("tr", { class: "clickable", "data-task-id": t.id, onclick: () => (location.hash = `#/tasks/${t.id}`) },
    h("td", {}, t.id), h("td", {}, t.name), h("td", {}, badge(t.status), t.paused ? " paused" : ""),
    h("td", {}, t.operation), h("td", {}, t.creator), h("td", {}, when(t.startTime)), h("td", {}, when(t.finishTime))));
  return h("table", { id: "task-table" },
    h("thead", {}, h("tr", {}, ...["id", "name", "status", "operation", "creator", "started", "finished"].map((x) => h("th", {}, x)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No task matches."))));
}

async function tasksView(view) {
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

/**
 * A task's page: its DAG, kept current from the task's event stream. The stream is
 * read with fetch, not EventSource, because EventSource cannot send credentials.
 */
async function taskView(id, view) {
  const signal = view.abort.signal;
  const first = await request("GET", `/tasks/instances/${id}`, undefined, signal);
  const page = { task: first.data, selected: null, unfolded: new Set(), lastSeq: seqOf(first), lastEventAt: 0, sinceRead: null, index: null };
  page.index = indexOf(page.task);
  const root = h("div", { id: "task", "data-task-id": id });
  const head = h("div");
  const now = h("div", { class: "now", id: "running-now" });
  const graph = h("div", { class: "graph", id: "dag" });
  const live = h("span", { class: "live", id: "live" });
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
    renderNow(page.task, now);
    graph.replaceChildren(drawDag(page, (sid) => { page.selected = sid; openSubtask(page, sid, reloadTask); schedule(); },
      (key) => { page.unfolded.add(key); schedule(); }));
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
      await watch(id, page, signal, (event) => {
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

async function watch(id, page, signal, onEvent) {
  const response = await fetch(`${API}/tasks/instances/${id}/events?after=${page.lastSeq}`, { headers: headers({ Accept: "text/event-stream" }), signal });
  if (response.status === 401 && state.me) signOut("Your session is no longer accepted.");
  if (!response.ok) throw new ApiError(response.status, 0, `the event stream was refused (${response.status})`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let event = { type: "message", data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let nl;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, nl).replace(/\r$/, "");
      buffer = buffer.slice(nl + 1);
      if (line === "") {
        if (event.type === "transition" && event.data.length) {
          const data = JSON.parse(event.data.join("\n"));
          page.lastSeq = Math.max(page.lastSeq, data.seq);
          onEvent(data);
        }
        event = { type: "message", data: [] };
      } else if (line.startsWith("event:")) event.type = line.slice(6).trim();
      else if (line.startsWith("data:")) event.data.push(line.slice(5).replace(/^ /, ""));
    }
  }
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
  el.textContent = `${task.subtasks.length} subtasks: ${summary}` + (doing ? ` — running now: ${doing}` : "") + held;
}

function legend() {
  return h("div", { class: "legend" }, ...STATUSES.map((x) => h("span", {}, h("i", { class: `l-${x}` }), x)));
}

/** Host of a per-host subtask, from the task's host list. */
function hostOf(task, sub) {
  const ids = (task.context && task.context.listMap && task.context.listMap.host_ids) || [];
  if (sub.parallelIdx >= 0 && ids[sub.parallelIdx]) return `host ${ids[sub.parallelIdx]}`;
  if (task.hostId) return `host ${task.hostId}`;
  return "";
}

/**
 * Stages of the DAG: subtasks at the same depth (longest path from a root) with the
 * same name, in order. The seeds' stage-wise batches and the rolling chains both come
 * out as one row per step (per batch, for rolling tasks).
 */
function stagesOf(task) {
  const byId = new Map(task.subtasks.map((x) => [x.id, x]));
  const depth = new Map();
  const indegree = new Map(task.subtasks.map((x) => [x.id, x.upstreams.filter((u) => byId.has(u)).length]));
  const queue = task.subtasks.filter((x) => indegree.get(x.id) === 0).map((x) => x.id);
  queue.forEach((q) => depth.set(q, 0));
  for (let i = 0; i < queue.length; i++) {
    const id = queue[i];
    for (const d of byId.get(id).downstreams) {
      if (!byId.has(d)) continue;
      depth.set(d, Math.max(depth.get(d) || 0, depth.get(id) + 1));
      indegree.set(d, indegree.get(d) - 1);
      if (indegree.get(d) === 0) queue.push(d);
    }
  }
  const levels = [];
  for (const sub of task.subtasks) {
    const d = depth.has(sub.id) ? depth.get(sub.id) : 0;
    (levels[d] = levels[d] || new Map());
    const group = levels[d].get(sub.name) || [];
    group.push(sub);
    levels[d].set(sub.name, group);
  }
  return levels.filter(Boolean).map((groups) => [...groups.values()].map((subs) => subs.sort((a, b) => a.parallelIdx - b.parallelIdx || a.id - b.id)));
}

function uniformStatus(level) {
  const first = level[0][0].status;
  return level.every((g) => g.every((x) => x.status === first)) ? first : null;
}

/** Rows to draw: levels, with long runs of alike levels folded unless unfolded. */
function rowsOf(levels, unfolded) {
  const rows = [];
  if (levels.length <= FOLD_ABOVE) return levels.map((level, i) => ({ level, index: i }));
  let i = 0;
  while (i < levels.length) {
    const status = uniformStatus(levels[i]);
    let j = i;
    while (status && j + 1 < levels.length && uniformStatus(levels[j + 1]) === status) j++;
    const key = `${i}-${j}`;
    if (!status || j - i + 1 < FOLD_RUN) {
      rows.push({ level: levels[i], index: i });
      i++;
    } else if (unfolded.has(key)) {
      for (let k = i; k <= j; k++) rows.push({ level: levels[k], index: k });
      i = j + 1;
    } else {
      const count = levels.slice(i, j + 1).reduce((n, l) => n + l.reduce((m, g) => m + g.length, 0), 0);
      rows.push({ fold: { key, from: i, to: j, status, count } });
      i = j + 1;
    }
  }
  return rows;
}

const BOX_W = 190, BOX_H = 42, GAP = 14, ROW_GAP = 26, CELL = 10, CELLS_PER_ROW = 50, LEFT = 44;

function drawDag(page, onSelect, onUnfold) {
  const task = page.task;
  const levels = stagesOf(task);
  const rows = rowsOf(levels, page.unfolded);
  const anchors = new Map(); // subtask id -> {x, top, bottom} of what stands for it
  const items = [];
  let y = 12, width = 600;

  for (const row of rows) {
    if (row.fold) {
      const f = row.fold;
      const g = s("g", { class: "fold", "data-fold": f.key, onclick: () => onUnfold(f.key) },
        s("rect", { x: LEFT, y, width: 520, height: 28, rx: 6 }),
        s("text", { x: LEFT + 12, y: y + 18 }, `stages ${f.from + 1}–${f.to + 1}: ${f.count} subtasks, all ${f.status} (click to show)`));
      items.push(g);
      // Edges into and out of a fold attach to its middle.
      const anchor = { x: LEFT + 260, top: y, bottom: y + 28 };
      for (const level of levels.slice(f.from, f.to + 1)) for (const g of level) for (const sub of g) anchors.set(sub.id, anchor);
      y += 28 + ROW_GAP;
      continue;
    }
    let x = LEFT, rowHeight = BOX_H;
    items.push(s("text", { x: 6, y: y + 16, class: "small" }, `${row.index + 1}`));
    for (const group of row.level) {
      if (group.length <= EXPAND_LIMIT) {
        for (const sub of group) {
          items.push(subtaskBox(task, sub, x, y, page.selected === sub.id));
          anchors.set(sub.id, { x: x + BOX_W / 2, top: y, bottom: y + BOX_H });
          x += BOX_W + GAP;
        }
      } else {
        const drawn = groupBox(task, group, x, y, page.selected);
        items.push(drawn.el);
        for (const sub of group) anchors.set(sub.id, { x: x + drawn.width / 2, top: y, bottom: y + drawn.height });
        rowHeight = Math.max(rowHeight, drawn.height);
        x += drawn.width + GAP;
      }
    }
    width = Math.max(width, x + 10);
    y += rowHeight + ROW_GAP;
  }

  const edges = new Set();
  const paths = [];
  for (const sub of task.subtasks) {
    const to = anchors.get(sub.id);
    for (const u of sub.upstreams) {
      const from = anchors.get(u);
      if (!from || !to || from === to || from.bottom >= to.top) continue;
      const key = `${from.x},${from.bottom}>${to.x},${to.top}`;
      if (edges.has(key)) continue;
      edges.add(key);
      const mid = (from.bottom + to.top) / 2;
      paths.push(s("path", { class: "edge", "marker-end": "url(#arrow)", d: `M${from.x},${from.bottom} C${from.x},${mid} ${to.x},${mid} ${to.x},${to.top - 2}` }));
    }
  }
  const defs = s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
    s("path", { d: "M0,0 L10,5 L0,10 z", fill: "#8c959f" })));
  // One listener for every box and cell: a thousand-host stage is a thousand cells.
  const pick = (ev) => {
    const hit = ev.target.closest("[data-subtask-id]");
    if (hit) onSelect(Number(hit.dataset.subtaskId));
  };
  return s("svg", { width, height: y, "data-subtasks": task.subtasks.length, onclick: pick }, defs, ...paths, ...items);
}

function subtaskBox(task, sub, x, y, selected) {
  const label = sub.name.length > 28 ? sub.name.slice(0, 27) + "…" : sub.name;
  return s("g", { class: `node${selected ? " selected" : ""}`, "data-subtask-id": sub.id, "data-status": sub.status },
    s("title", {}, `${sub.name} (${hostOf(task, sub) || "whole task"}): ${sub.status}`),
    s("rect", { class: `box f-${sub.status}${sub.status === "RUNNING" ? " pulse" : ""}`, x, y, width: BOX_W, height: BOX_H }),
    s("text", { x: x + 8, y: y + 17 }, label),
    s("text", { x: x + 8, y: y + 33, class: "small" }, `${hostOf(task, sub)} ${sub.status}`.trim()));
}

/** A stage of many hosts: one box, a bar of the counts, and a small cell per subtask. */
function groupBox(task, group, x, y, selectedId) {
  const perRow = Math.min(CELLS_PER_ROW, group.length);
  const width = Math.max(260, perRow * CELL + 16);
  const cellRows = Math.ceil(group.length / perRow);
  const height = 46 + cellRows * CELL + 8;
  const counts = {};
  for (const sub of group) counts[sub.status] = (counts[sub.status] || 0) + 1;
  const el = s("g", { class: "group", "data-group": group[0].name, "data-count": group.length },
    s("rect", { class: `box ${groupClass(counts)}`, x, y, width, height, rx: 6, stroke: "#57606a" }),
    s("text", { x: x + 8, y: y + 16 }, `${group[0].name} · ${group.length} hosts`),
    s("text", { x: x + 8, y: y + 31, class: "small" }, STATUSES.filter((st) => counts[st]).map((st) => `${counts[st]} ${st.toLowerCase()}`).join(" · ")));
  let bx = x + 8;
  const barWidth = width - 16;
  for (const st of STATUSES) {
    if (!counts[st]) continue;
    const w = (barWidth * counts[st]) / group.length;
    el.append(s("rect", { class: `f-${st}`, x: bx, y: y + 36, width: w, height: 4 }));
    bx += w;
  }
  group.forEach((sub, i) => {
    const cx = x + 8 + (i % perRow) * CELL, cy = y + 46 + Math.floor(i / perRow) * CELL;
    el.append(s("rect", {
      class: `cell f-${sub.status}${sub.status === "RUNNING" ? " pulse" : ""}${selectedId === sub.id ? " selected" : ""}`,
      x: cx, y: cy, width: CELL - 2, height: CELL - 2, rx: 2, "data-subtask-id": sub.id, "data-status": sub.status,
    }, s("title", {}, `${sub.name} (${hostOf(task, sub)}): ${sub.status}`)));
  });
  return { el, width, height };
}

function groupClass(counts) {
  for (const st of ["FAILED", "RUNNING", "CANCELING", "READY", "PENDING"]) if (counts[st]) return `f-${st}`;
  return "f-SUCCESSFUL";
}

/** The subtask drawer: what it is, its operations, and its log, kept current. */
function openSubtask(page, sid, reload) {
  const task = page.task;
  const pre = h("pre", { id: "subtask-log" }, "Loading…");
  const facts = h("dl");
  const buttons = h("div", { class: "bar" });
  const drawer = openDrawer("Subtask", facts, buttons, h("h2", {}, "Log"), pre);
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
  const onChange = () => fill();
  document.addEventListener("task-changed", onChange);
  state.drawerCleanup = () => document.removeEventListener("task-changed", onChange);
  fill();
}

window.addEventListener("hashchange", () => { clearBanner(); render(); });
window.addEventListener("DOMContentLoaded", () => render());
