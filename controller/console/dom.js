// Building and changing the page: HTML and SVG element helpers, how times and states
// are shown, the error banner, operation buttons, the pager, and the side drawer.

import { ApiError } from "./api.js";
import { may } from "./state.js";

/** An HTML element: `attrs` (on* are listeners, `text` the text), then its children. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, like `h`. */
export function s(tag, attrs, ...children) {
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

/** Sets an attribute only when its value changes. */
export function setAttr(el, name, value) {
  const text = String(value);
  if (el.getAttribute(name) !== text) el.setAttribute(name, text);
}

/** Sets an element's text, changing its text node in place rather than replacing it. */
export function setText(el, text) {
  const node = el.firstChild;
  if (node && node.nodeType === Node.TEXT_NODE && !node.nextSibling) {
    if (node.data !== text) node.data = text;
  } else if (el.textContent !== text) {
    el.textContent = text;
  }
}

export function badge(status) {
  return h("span", { class: `badge s-${status}`, "data-status": status }, status);
}

export function when(t) {
  if (!t) return "–";
  const d = new Date(t);
  return isNaN(d) ? t : d.toLocaleString();
}

export function uptime(seconds) {
  if (!seconds || seconds < 0) return "–";
  const d = Math.floor(seconds / 86400), hh = Math.floor((seconds % 86400) / 3600);
  const m = Math.floor((seconds % 3600) / 60), sec = seconds % 60;
  return d ? `${d}d ${hh}h` : hh ? `${hh}h ${m}m` : m ? `${m}m ${sec}s` : `${sec}s`;
}

/** Runs an operation a button started, showing what the API said if it refused. */
export async function act(button, work) {
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

export function showError(e) {
  if (e && e.name === "AbortError") return; // the page it was for is gone
  const banner = document.getElementById("banner");
  banner.className = "";
  banner.replaceChildren(
    h("span", { "data-code": e.code || "" }, e instanceof ApiError ? e.describe() : String(e.message || e)),
    h("button", { class: "close", onclick: () => (banner.hidden = true) }, "Dismiss"),
  );
  banner.hidden = false;
}

export function clearBanner() {
  document.getElementById("banner").hidden = true;
}

/** An operation button: disabled, with the reason, when the user lacks the permission. */
export function opButton(label, permission, onclick, extra) {
  const allowed = may(permission);
  const attrs = { "data-op": label, onclick, ...(extra || {}) };
  if (!allowed) {
    attrs.disabled = true;
    attrs.title = `needs ${permission}`;
  }
  return h("button", attrs, label);
}

/** Previous and next of a page of a list, and where it stands. */
export function pager(page, onPage) {
  const { number, totalPages, totalElements } = page;
  return h("div", { class: "pager" },
    h("button", { "data-page": "previous", disabled: number <= 1, onclick: () => onPage(number - 1) }, "‹ Previous"),
    h("span", {}, `page ${number} of ${Math.max(totalPages, 1)} · ${totalElements} in all`),
    h("button", { "data-page": "next", disabled: number >= totalPages, onclick: () => onPage(number + 1) }, "Next ›"),
  );
}

let drawerCleanup = null;

/** Shows the drawer with `title` and `content`; `cleanup` runs when it closes. */
export function openDrawer(title, content, cleanup) {
  closeDrawer();
  const drawer = document.getElementById("drawer");
  drawer.replaceChildren(
    h("div", { class: "head" }, h("h2", {}, title), h("button", { id: "drawer-close", onclick: closeDrawer }, "Close")),
    ...content,
  );
  drawer.hidden = false;
  drawerCleanup = cleanup || null;
  return drawer;
}

/** Hides the drawer and stops what kept it current. */
export function closeDrawer() {
  document.getElementById("drawer").hidden = true;
  const cleanup = drawerCleanup;
  drawerCleanup = null;
  if (cleanup) cleanup();
}
