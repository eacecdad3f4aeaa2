// The console's entry: a single page over the controller's own REST API (/api/v2),
// signed in with the same Basic credentials, so it can do and see exactly what the API
// lets the user do and see. This module owns sign-in, the header and the router (which
// page the address shows, and stopping the one it replaces). No build step and no
// dependencies: the controller embeds these files and the browser loads them as modules.

import { api, onSessionLost } from "./api.js";
import { clearBanner, closeDrawer, h, showError } from "./dom.js";
import { hostView, hostsView } from "./hosts.js";
import { packagesView } from "./packages.js";
import {
  authorization, currentUser, endSession, keepSession, may, setCurrentUser, useCredentials,
} from "./state.js";
import { taskView, tasksView } from "./tasks.js";

/** The page on screen: aborting it stops its requests, and its timers are cleared. */
let current = null;

function signOut(message) {
  endSession();
  location.hash = "#/login";
  render().then(() => message && showError(new Error(message)));
}

onSessionLost(signOut);

async function loadMe() {
  if (!authorization()) return null;
  try {
    setCurrentUser(await api("GET", "/profiles/me"));
  } catch (e) {
    setCurrentUser(null);
    if (e.status !== 401) showError(e);
  }
  return currentUser();
}

function renderHeader() {
  const nav = document.getElementById("nav");
  const who = document.getElementById("who");
  const route = location.hash.split("/")[1] || "";
  nav.replaceChildren();
  who.replaceChildren();
  const me = currentUser();
  if (!me) return;
  if (may("HOST_VIEWER")) nav.append(h("a", { href: "#/hosts", class: route === "hosts" ? "active" : null }, "Hosts"));
  if (may("TASK_VIEWER")) nav.append(h("a", { href: "#/tasks", class: route === "tasks" ? "active" : null }, "Tasks"));
  if (may("HOST_VIEWER")) nav.append(h("a", { href: "#/packages", class: route === "packages" ? "active" : null }, "Packages"));
  who.append(
    h("span", { id: "username", title: me.permissions.join(", ") }, me.username),
    h("button", { id: "signout", onclick: () => signOut() }, "Sign out"),
  );
}

function leaveView() {
  if (current) {
    current.abort.abort();
    current.timers.forEach(clearInterval);
  }
  current = { abort: new AbortController(), timers: [] };
  closeDrawer();
  return current;
}

async function render() {
  const view = leaveView();
  const main = document.getElementById("view");
  const parts = location.hash.replace(/^#\/?/, "").split("/");
  if (!currentUser() && authorization()) await loadMe();
  renderHeader();
  if (!currentUser()) {
    main.replaceChildren(loginView());
    return;
  }
  const home = may("HOST_VIEWER") ? "#/hosts" : may("TASK_VIEWER") ? "#/tasks" : null;
  const routes = {
    hosts: () => (parts[1] ? hostView(Number(parts[1]), view) : hostsView(view)),
    tasks: () => (parts[1] ? taskView(Number(parts[1]), view) : tasksView(view)),
    packages: () => packagesView(view),
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
    if (page && current === view) {
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
      useCredentials(user.value, pass.value);
      if (await loadMe()) {
        keepSession();
        // A deep link is kept; otherwise render() picks the page this user may see.
        if (location.hash === "#/login") location.hash = "#/";
        else render();
      } else {
        endSession();
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

window.addEventListener("hashchange", () => { clearBanner(); render(); });
// A module runs once the document is parsed, as a deferred script did.
render();
