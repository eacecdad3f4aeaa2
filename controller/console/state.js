// What outlives a page of the console: the session (the Basic credentials, kept for the
// browser tab only, and the signed-in user's profile) and the hosts selected on the host
// list. Other modules read and change it through these functions only.

const KEY = "ocp.auth";

let credentials = sessionStorage.getItem(KEY);
let profile = null;
const selectedHosts = new Set();

/** The Basic credentials the API is called with, base64; null when signed out. */
export function authorization() {
  return credentials;
}

/** Signs in as `username`: the credentials are tried first, and kept by `keepSession`. */
export function useCredentials(username, password) {
  credentials = btoa(unescape(encodeURIComponent(`${username}:${password}`)));
}

/** Keeps the credentials that were just accepted for the rest of the tab's life. */
export function keepSession() {
  if (credentials) sessionStorage.setItem(KEY, credentials);
}

/** Forgets the credentials and the user. */
export function endSession() {
  credentials = null;
  profile = null;
  sessionStorage.removeItem(KEY);
}

/** GET /profiles/me of the signed-in user, or null. */
export function currentUser() {
  return profile;
}

export function setCurrentUser(me) {
  profile = me;
}

/** Whether the signed-in user holds `permission` (the API decides anyway). */
export function may(permission) {
  return !!profile && profile.permissions.includes(permission);
}

export function isHostSelected(id) {
  return selectedHosts.has(id);
}

export function selectHost(id, selected) {
  if (selected) selectedHosts.add(id);
  else selectedHosts.delete(id);
}

export function selectedHostIds() {
  return [...selectedHosts];
}

export function clearHostSelection() {
  selectedHosts.clear();
}
