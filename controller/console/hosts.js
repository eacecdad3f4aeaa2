// The host pages: the host list with OCP's filters and each agent's version, the
// selection and its batch operations (plain or rolling, an upgrade among them), adding a
// host, and one host's agent and processes with their operations and logs.

import { ApiError, api, query } from "./api.js";
import { act, badge, clearBanner, h, opButton, openDrawer, pager, showError, uptime, when } from "./dom.js";
import { newestPackages, upgradeControl, versionCell, versionDrift } from "./packages.js";
import { clearHostSelection, isHostSelected, may, selectHost, selectedHostIds } from "./state.js";
import { taskTable } from "./tasks.js";

const HOST_STATUSES = ["NEW", "ONLINE", "OFFLINE"];

/** The list's filter, kept while the tab is open. */
const hostFilter = { status: new Set(), keyword: "", sort: "id,asc", page: 1, size: 50 };

export async function hostsView(view) {
  const root = h("div", { id: "hosts" });
  const list = h("div");
  const selected = h("span", { id: "selected-count" });
  const batch = batchForm(selected);

  let shown = "";
  let loads = 0;
  async function load() {
    const mine = ++loads;
    const [page, packages] = await Promise.all([api("GET", "/compute/hosts" + query({
      status: [...hostFilter.status].join(","),
      keyword: hostFilter.keyword,
      sort: hostFilter.sort,
      page: hostFilter.page,
      size: hostFilter.size,
    }), undefined, view.abort.signal), newestPackages(view.abort.signal)]);
    // An answer overtaken by a later load (a refresh sent before a page or filter
    // change) is dropped.
    if (mine !== loads) return;
    batch.upgrade.refresh(packages);
    const newest = packages.length ? packages[0].version : null;
    // Redrawn only when more than the update times changed (a heartbeat rewrites
    // them), so that a refresh never swaps a row or a checkbox from under the pointer.
    const seen = JSON.stringify([page.page, newest, page.contents.map(({ updateTime, ...rest }) => rest)]);
    if (seen === shown) {
      for (const x of page.contents) {
        const cell = list.querySelector(`tr[data-host-id="${x.id}"] .updated`);
        if (cell) cell.textContent = when(x.updateTime);
      }
      return;
    }
    shown = seen;
    list.replaceChildren(hostTable(page.contents, newest, refreshCount), pager(page.page, (n) => { hostFilter.page = n; load().catch(showError); }));
    refreshCount();
  }
  function refreshCount() {
    const count = selectedHostIds().length;
    selected.textContent = `${count} selected`;
    batch.element.querySelectorAll("button[data-batch]").forEach((b) => {
      b.disabled = !may("HOST_MANAGER") || count === 0;
    });
    // An upgrade needs a version to go to as well.
    if (!batch.upgrade.ready()) batch.element.querySelector("button[data-batch=batchUpgradeAgents]").disabled = true;
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
    batch.element,
    list,
    may("HOST_MANAGER") ? addHostForm(load) : null,
  );
  await load();
  view.timers.push(setInterval(() => load().catch(() => {}), 5000));
  return root;
}

/** The hosts of a page; `newest` is the newest package's version, which each agent's is held to. */
function hostTable(hosts, newest, onSelect) {
  const all = h("input", {
    type: "checkbox", id: "select-page", title: "select the hosts on this page",
    checked: hosts.length > 0 && hosts.every((x) => isHostSelected(x.id)),
    onchange: (ev) => {
      for (const x of hosts) selectHost(x.id, ev.target.checked);
      document.querySelectorAll("input[data-host]").forEach((b) => (b.checked = ev.target.checked));
      onSelect();
    },
  });
  const rows = hosts.map((x) => h("tr", { class: "clickable", "data-host-id": x.id, onclick: (ev) => { if (ev.target.tagName !== "INPUT") location.hash = `#/hosts/${x.id}`; } },
    h("td", {}, h("input", {
      type: "checkbox", "data-host": x.id, checked: isHostSelected(x.id),
      onchange: (ev) => { selectHost(x.id, ev.target.checked); onSelect(); },
    })),
    h("td", {}, x.id),
    h("td", {}, x.name),
    h("td", {}, `${x.innerIpAddress}:${x.agentPort}`),
    h("td", {}, badge(x.status)),
    versionCell(x.agentVersion, newest),
    h("td", { class: "wrap muted" }, x.statusReason || ""),
    h("td", { class: "updated" }, when(x.updateTime)),
  ));
  return h("table", { id: "host-table" },
    h("thead", {}, h("tr", {}, h("th", {}, all), ...["id", "name", "agent address", "status", "agent version", "reason", "updated"].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No host matches."))),
  );
}

/**
 * Batch operations on the selected hosts, plain or rolling with the rollout's options: the
 * panel, and the upgrade control whose versions the list keeps current.
 */
function batchForm(selected) {
  const rolling = h("input", { type: "checkbox", id: "rollout-on" });
  const field = (id, label, attrs) => h("label", {}, label, h("input", { id, class: "short", ...attrs }));
  const batchSize = field("rollout-batch-size", "batch size", { value: "1", placeholder: "2 or 25%" });
  const maxFailed = field("rollout-max-failed", "max failed hosts", { type: "number", min: 0, value: 0 });
  const pause = field("rollout-pause", "pause s", { type: "number", min: 0, value: 0 });
  const healthy = field("rollout-healthy", "healthy after s", { type: "number", min: 0, value: 0 });
  const canary = h("input", { type: "checkbox", id: "rollout-canary" });
  const number = (label) => Number(label.querySelector("input").value);

  async function submit(button, route, extra) {
    const body = { hostIds: selectedHostIds(), ...extra };
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
      clearHostSelection();
      location.hash = `#/tasks/${task.id}`;
    }
  }
  const button = (label, route) => {
    const b = opButton(label, "HOST_MANAGER", () => submit(b, route), { "data-batch": route, disabled: true });
    return b;
  };
  const upgrade = upgradeControl((b, version) => submit(b, "batchUpgradeAgents", { version }));
  const element = h("div", { class: "panel", id: "batch" },
    h("div", { class: "bar" }, selected,
      button("Restart agents", "batchRestartAgents"),
      button("Stop agents", "batchStopAgents"),
      button("Start agents", "batchStartAgents"),
      h("span", { class: "group" }, ...upgrade.elements)),
    h("fieldset", {}, h("legend", {}, h("label", {}, rolling, "rolling, in batches")),
      batchSize, maxFailed, pause, healthy, h("label", {}, canary, "pause after the first batch")),
  );
  return { element, upgrade };
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

export async function hostView(id, view) {
  const signal = view.abort.signal;
  const [host, agent, packages] = await Promise.all([
    api("GET", `/compute/hosts/${id}`, undefined, signal),
    api("GET", `/compute/hosts/${id}/agent`, undefined, signal),
    newestPackages(signal),
  ]);
  const newest = packages.length ? packages[0].version : null;
  const root = h("div", { id: "host" });
  const processes = h("div");
  const info = h("div", { class: "panel" });

  let shownProcesses = "";
  function renderAgent(a) {
    const drift = versionDrift(a.version, newest);
    info.replaceChildren(h("dl", {},
      h("dt", {}, "address"), h("dd", {}, `${host.innerIpAddress}:${host.agentPort}`),
      h("dt", {}, "host status"), h("dd", {}, badge(host.status), host.statusReason ? ` ${host.statusReason}` : ""),
      h("dt", {}, "agent"), h("dd", { id: "agent-status" }, badge(a.status)),
      h("dt", {}, "agent version"), h("dd", { id: "agent-version", title: drift },
        a.version || "–", drift ? h("span", { class: "drift" }, ` ⚠ ${drift}`) : null),
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
  openDrawer(`Log of ${proc.alias}`, [h("p", { class: "muted" }, proc.logFilePattern || ""), pre]);
  try {
    const log = await api("GET", `/compute/hosts/${hostId}/agent/processes/${proc.id}/log?lines=200`);
    pre.textContent = log.log || "(empty)";
  } catch (e) {
    pre.textContent = e instanceof ApiError ? e.describe() : String(e);
  }
}
