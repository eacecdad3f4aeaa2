// Agent packages: the packages page (the list, an upload, a delete), the newest
// package's version that the host list compares each agent with, and the choice of
// version an upgrade of the selected hosts goes to.

import { api, query } from "./api.js";
import { act, clearBanner, h, opButton, pager, showError, when } from "./dom.js";
import { may } from "./state.js";

/** Enough for every version an upgrade may go to; the API allows 2,000 a page. */
const CHOICES = 200;

/** The packages, newest first (the API's order): the first page of `CHOICES`. */
export async function newestPackages(signal) {
  return (await api("GET", `/agent/packages${query({ size: CHOICES })}`, undefined, signal)).contents;
}

/**
 * Why a host's agent version is flagged, or null: it differs from the newest package's.
 * An agent that has not answered yet (no version) and a store without packages flag nothing.
 */
export function versionDrift(version, newest) {
  if (!newest || !version || version === newest) return null;
  return `differs from the newest package ${newest}`;
}

/** The versions packages exist for, newest first, each once (one package per architecture). */
export function versions(packages) {
  return [...new Set(packages.map((p) => p.version))];
}

/** A size in bytes as a person reads it. */
export function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The host list's agent version cell: the version, marked when it is not the newest. */
export function versionCell(version, newest) {
  const drift = versionDrift(version, newest);
  return h("td", { class: "agent-version", "data-version": version || "", "data-drift": drift ? "yes" : null, title: drift },
    version || "–", drift ? h("span", { class: "drift", "aria-label": drift }, " ⚠") : null);
}

/**
 * The upgrade control of the batch bar: a version among the uploaded ones and the button
 * that upgrades the selected hosts to it; `refresh` keeps the versions current without
 * losing the one chosen.
 */
export function upgradeControl(onUpgrade) {
  const choice = h("select", { id: "upgrade-version", title: "the version to upgrade to" });
  const button = opButton("Upgrade agents", "HOST_MANAGER", () => onUpgrade(button, choice.value), { "data-batch": "batchUpgradeAgents", disabled: true });
  let shown = null;
  function refresh(packages) {
    const list = versions(packages);
    const seen = list.join("\n");
    if (seen === shown) return;
    shown = seen;
    const kept = choice.value;
    choice.replaceChildren(...list.map((v) => h("option", { value: v, selected: v === kept }, v)));
    choice.hidden = !may("HOST_MANAGER") || list.length === 0;
  }
  /** Whether an upgrade can be asked for: a version to go to. */
  const ready = () => choice.options.length > 0;
  return { elements: [choice, button], refresh, ready };
}

export async function packagesView(view) {
  const list = h("div");
  let page = 1;
  let shown = "";
  async function load() {
    const found = await api("GET", `/agent/packages${query({ page, size: 50 })}`, undefined, view.abort.signal);
    const seen = JSON.stringify(found);
    if (seen === shown) return;
    shown = seen;
    list.replaceChildren(packageTable(found.contents, load), pager(found.page, (n) => { page = n; load().catch(showError); }));
  }
  await load();
  view.timers.push(setInterval(() => load().catch(() => {}), 5000));
  return h("div", { id: "packages" },
    h("h1", {}, "Agent packages"),
    h("p", { class: "muted" }, "ocp-agent binaries the hosts' agents can be upgraded to, newest first."),
    list,
    may("HOST_MANAGER") ? uploadForm(() => { page = 1; return load(); }) : null,
  );
}

function packageTable(packages, reload) {
  const rows = packages.map((p) => {
    const remove = opButton("Delete", "HOST_MANAGER", async () => {
      if (!confirm(`Delete the package ${p.version} (${p.arch})?`)) return;
      if (await act(remove, () => api("DELETE", `/agent/packages/${p.id}`))) reload().catch(showError);
    }, { class: "danger", "data-package-op": "delete" });
    return h("tr", { "data-package-id": p.id, "data-version": p.version },
      h("td", {}, p.version), h("td", {}, p.arch), h("td", { title: `${p.size} bytes` }, bytes(p.size)),
      h("td", {}, p.uploadedBy), h("td", {}, when(p.uploadTime)),
      h("td", { class: "digest", title: p.sha256 }, p.sha256.slice(0, 12) + "…"),
      h("td", {}, remove));
  });
  return h("table", { id: "package-table" },
    h("thead", {}, h("tr", {}, ...["version", "arch", "size", "uploaded by", "uploaded", "sha256", ""].map((t) => h("th", {}, t)))),
    h("tbody", {}, rows.length ? rows : h("tr", {}, h("td", { colspan: 7, class: "muted" }, "No package uploaded yet."))));
}

/** The file is sent as it is, as the body: the controller streams it into its store. */
function uploadForm(reload) {
  const file = h("input", { id: "package-file", type: "file", required: true });
  const version = h("input", { id: "package-version", placeholder: "4.3.0", required: true, maxlength: 64 });
  const status = h("span", { id: "package-upload-status", class: "muted" });
  const submit = h("button", { type: "submit", id: "package-upload", "data-op": "Upload package" }, "Upload package");
  const form = h("form", {
    class: "bar",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = file.files[0];
      if (!body) return;
      status.textContent = `uploading ${bytes(body.size)}…`;
      const path = `/agent/packages${query({ version: version.value.trim() })}`;
      const stored = await act(submit, () => api("POST", path, body));
      status.textContent = stored ? `uploaded ${stored.version} (${stored.arch})` : "";
      if (stored) { file.value = ""; version.value = ""; clearBanner(); reload().catch(showError); }
    },
  }, h("label", {}, "ocp-agent binary", file), h("label", {}, "version", version), submit, status);
  return h("div", { class: "panel" }, h("h2", {}, "Upload a package"), form);
}
